"""Raises on import, as a plugin with a missing dependency would."""

raise ImportError("broken_plugin needs a library that is not installed")
