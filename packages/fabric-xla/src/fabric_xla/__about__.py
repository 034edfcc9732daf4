"""The version of fabric-xla."""

__version__ = "0.1.0"
