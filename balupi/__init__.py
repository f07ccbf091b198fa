"""BaluPi: a hot-cache WebDAV front and energy monitor for a sleeping home NAS."""

__version__ = "0.1.0"
