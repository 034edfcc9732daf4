"""Choosing the cluster environment of the current process.

Every registered environment's ``detect()`` is asked in ascending ``detection_priority``
(lower first); the first that recognises the process wins:

| priority | name           | recognised by                                                                  |
|---------:|----------------|--------------------------------------------------------------------------------|
| 10       | `torchelastic` | `TORCHELASTIC_RUN_ID`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, ... (torchrun)      |
| 20       | `kubeflow`     | `KUBERNETES_PORT`, `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`          |
| 30       | `lsf`          | `LSB_JOBID`, `LSB_DJOB_RANKFILE`, `JSM_NAMESPACE_LOCAL_RANK`, `JSM_NAMESPACE_SIZE` |
| 40       | `mpi`          | `OMPI_COMM_WORLD_SIZE`, or `PMI_SIZE` not set by srun                          |
| 50       | `slurm`        | `SLURM_NTASKS`, with `SLURM_JOB_NAME` not `bash`/`interactive`                 |
| 1000     | `local`        | always (the fallback)                                                          |

torchelastic comes first because ``torchrun`` started inside ``srun``, a PyTorchJob pod or
an MPI job spawns the workers itself, and they carry its variables alongside the outer
scheduler's. MPI comes before SLURM because ``mpirun`` inside an ``sbatch`` allocation
inherits the allocation's ``SLURM_*`` variables, which describe the batch step, not the ranks.

``FABRIC_CLUSTER_ENVIRONMENT=<name>`` skips detection and uses the named environment;
``FABRIC_CLUSTER_ENVIRONMENT=none`` uses the local one. The choice is logged once, at INFO
level on the ``fabric_core`` logger, with the reason.
"""

from __future__ import annotations

import logging
import os
from typing import Final

from fabric_core._registries import ENVIRONMENT_REGISTRY
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.registry import UnknownNameError

log = logging.getLogger("fabric_core")

OVERRIDE_VARIABLE: Final = "FABRIC_CLUSTER_ENVIRONMENT"
_reported: set[str] = set()


def detect_environment() -> ClusterEnvironment:
    """The cluster environment this process runs in.

    ``FABRIC_CLUSTER_ENVIRONMENT=<name>`` forces a registered environment, and ``none``
    forces the local one. Otherwise every registered environment's ``detect()`` is asked,
    in ascending ``detection_priority``, and the first that recognises the process wins;
    the local environment is the fallback. The choice is logged once with its reason.

    Returns:
        A new instance of the chosen environment.

    Raises:
        UnknownNameError: ``FABRIC_CLUSTER_ENVIRONMENT`` names no registered environment.
    """
    forced = os.environ.get(OVERRIDE_VARIABLE, "").strip()
    if forced:
        return _forced_environment(forced)
    classes = [(ENVIRONMENT_REGISTRY.get_class(name), name) for name in ENVIRONMENT_REGISTRY.available()]
    passed: list[str] = []
    for cls, name in sorted(classes, key=lambda pair: pair[0].detection_priority):
        if cls.detect():
            checked = f"; not recognised before it: {', '.join(passed)}" if passed else ""
            reason = (
                f"{cls.__name__}.detect() recognised this process "
                f"(detection priority {cls.detection_priority}{checked})"
            )
            if name == "local":
                reason = (
                    f"no cluster environment recognised this process (checked {', '.join(passed) or 'none'})"
                )
            _report(name, reason)
            return ENVIRONMENT_REGISTRY.build(name)
        passed.append(name)
    raise AssertionError("the local environment always detects")  # pragma: no cover


def _forced_environment(forced: str) -> ClusterEnvironment:
    name = "local" if forced.lower() == "none" else forced
    if name not in ENVIRONMENT_REGISTRY and name.lower() in ENVIRONMENT_REGISTRY:
        name = name.lower()
    try:
        cls = ENVIRONMENT_REGISTRY.get_class(name)
    except UnknownNameError as error:
        raise UnknownNameError(
            f"{OVERRIDE_VARIABLE}={forced!r} does not name a cluster environment. {error} Set it to a registered "
            "name, to 'none' for the local environment, or unset it to detect the environment."
        ) from None
    reason = f"forced by {OVERRIDE_VARIABLE}={forced}"
    if name != "local" and not cls.detect():
        reason += f"; note that {cls.__name__}.detect() does not recognise this process"
    _report(name, reason)
    return ENVIRONMENT_REGISTRY.build(name)


def _report(name: str, reason: str) -> None:
    if name not in _reported:
        _reported.add(name)
        log.info("Cluster environment: %s (%s).", name, reason)
