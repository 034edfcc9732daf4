"""Small helpers shared by fabric-core and the plugins."""
