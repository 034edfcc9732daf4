"""The environment of a Kubeflow ``PyTorchJob``: one process per pod."""

from __future__ import annotations

import os
from typing import Final

from fabric_core.environments._exported import ExportedRanksEnvironment
from fabric_core.environments._variables import read_int

_REQUIRED: Final = ("KUBERNETES_PORT", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


class KubeflowEnvironment(ExportedRanksEnvironment):
    """A pod of a Kubeflow ``PyTorchJob``, which runs one training process per pod.

    The training operator exports ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` (the
    number of pods) and ``RANK`` (this pod's index); Kubernetes exports ``KUBERNETES_PORT``
    in every pod. Each pod is one node with one process, so the local rank is 0 and the
    node rank is ``RANK``.

    A ``PyTorchJob`` that runs ``torchrun`` in each pod (``nprocPerNode``) is recognised as
    torchelastic instead: its workers carry ``TORCHELASTIC_RUN_ID`` and torchelastic is asked
    first.
    """

    detection_priority = 20

    @staticmethod
    def detect() -> bool:
        """True in a pod where the training operator set the ranks and no torchrun agent runs."""
        if "TORCHELASTIC_RUN_ID" in os.environ:
            return False
        return all(os.environ.get(name) for name in _REQUIRED)

    def local_rank(self) -> int:
        """0: one process per pod."""
        return 0

    def node_rank(self) -> int:
        """``RANK``: each pod is a node."""
        return read_int("RANK")

    def processes_per_node(self) -> int:
        """1: one process per pod."""
        return 1

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Check that Fabric asks for one device per pod and one node per pod.

        Raises:
            ValueError: ``devices`` is not 1, or ``num_nodes`` differs from ``WORLD_SIZE``.
        """
        pods = self.world_size()
        if num_devices != 1:
            raise ValueError(
                f"A Kubeflow PyTorchJob runs one process per pod, but Fabric(devices={num_devices}) was given. "
                "Set devices=1 (and num_nodes to the number of pods), or run 'torchrun --nproc-per-node="
                f"{num_devices}' in each pod to use {num_devices} devices per pod."
            )
        if num_nodes != pods:
            raise ValueError(
                f"The PyTorchJob has {pods} pod(s) (WORLD_SIZE={pods}), but Fabric(num_nodes={num_nodes}) was "
                f"given. Set num_nodes={pods}, or change the job's replica count."
            )
