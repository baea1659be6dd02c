"""The library's version, which enters every model cache key and sweep record."""

__version__ = "0.1.0"
