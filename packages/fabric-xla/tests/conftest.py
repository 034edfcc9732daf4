"""fabric-xla's tests run on XLA:CPU (``PJRT_DEVICE=CPU``), in this process and in scripts.

The XLA runtime is configured once per process, so tests that need another device count
(SPMD over 2 virtual devices) or several processes run a script in a subprocess. On a TPU
host the multi-process tests run their scripts with ``PJRT_DEVICE=TPU``; this process stays
on XLA:CPU so it does not hold the TPU chips they need.

The XLA runtime is started here, before any test runs a backward pass on the CPU: PyTorch's
autograd engine counts each device type's devices at its first backward pass, and XLA's
count only once the runtime runs.
"""

from __future__ import annotations

import os

os.environ["PJRT_DEVICE"] = "CPU"

import torch_xla

torch_xla.device()
