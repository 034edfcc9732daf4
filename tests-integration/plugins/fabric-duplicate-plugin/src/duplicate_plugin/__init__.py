"""A plugin distribution whose registrations collide with fabric-core's."""
