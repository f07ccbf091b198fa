"""Keeping the Pi and the NAS in agreement: write-back of pending changes, and namespace refresh."""
