"""Simulated hardware for tests, benchmarks and `balupi demo`: real servers on loopback, not mocks."""
