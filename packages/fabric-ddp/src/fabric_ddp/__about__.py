"""The version of fabric-ddp."""

__version__ = "0.1.0"
