"""A plugin distribution that fails to load."""
