"""Checkpoint I/O: how checkpoint bytes reach storage and come back."""

from fabric_core.io.checkpoint_io import CheckpointIO, TorchCheckpointIO

__all__ = ["CheckpointIO", "TorchCheckpointIO"]
