"""Benchmarks: `make bench` runs each module here against its own database and prints figures."""
