"""Choosing the cluster environment of the current process."""

from __future__ import annotations

import logging
import os
from typing import Final

from fabric_core._registries import ENVIRONMENT_REGISTRY
from fabric_core.environments.cluster_environment import ClusterEnvironment

log = logging.getLogger("fabric_core")

OVERRIDE_VARIABLE: Final = "FABRIC_CLUSTER_ENVIRONMENT"
_reported: set[str] = set()


def detect_environment() -> ClusterEnvironment:
    """The cluster environment this process runs in.

    ``FABRIC_CLUSTER_ENVIRONMENT=<name>`` forces a registered environment, and ``none``
    forces the local one. Otherwise every registered environment's ``detect()`` is asked,
    in ascending ``detection_priority``, and the first that recognises the process wins;
    the local environment is the fallback. The choice is logged once with its reason.

    Raises:
        UnknownNameError: ``FABRIC_CLUSTER_ENVIRONMENT`` names no registered environment.
    """
    forced = os.environ.get(OVERRIDE_VARIABLE, "").strip()
    if forced:
        name = "local" if forced.lower() == "none" else forced
        environment = ENVIRONMENT_REGISTRY.get(name)
        _report(name, f"{OVERRIDE_VARIABLE}={forced}")
        return environment
    classes = [(ENVIRONMENT_REGISTRY.get_class(name), name) for name in ENVIRONMENT_REGISTRY.available()]
    for cls, name in sorted(classes, key=lambda pair: pair[0].detection_priority):
        if cls.detect():
            _report(name, f"{cls.__name__}.detect() recognised this process")
            return ENVIRONMENT_REGISTRY.get(name)
    raise AssertionError("the local environment always detects")  # pragma: no cover


def _report(name: str, reason: str) -> None:
    if name not in _reported:
        _reported.add(name)
        log.info("Cluster environment: %s (%s).", name, reason)
