"""The version of fabric-deepspeed."""

__version__ = "0.1.0"
