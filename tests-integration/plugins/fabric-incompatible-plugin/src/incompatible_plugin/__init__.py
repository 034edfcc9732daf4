"""A plugin distribution that supports only a plugin API version fabric-core does not provide."""
