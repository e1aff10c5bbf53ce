"""Plumbline: a reproducible path from raw tabular data to a monitored prediction service."""

__version__ = "0.1.0"
