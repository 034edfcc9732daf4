"""The version of fabric-fsdp."""

__version__ = "0.1.0"
