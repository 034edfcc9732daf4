"""fabric-xla installed but torch_xla not: what ``Fabric(...)`` says for each way of asking for XLA.

torch_xla is hidden by ``sys.modules["torch_xla"] = None``, Python's own marker for a module
that cannot be imported: ``importlib.util.find_spec`` reports it missing and ``import``
raises ``ModuleNotFoundError``, as in an environment without it. Prints, as JSON, each
call's exception type and message.
"""

from __future__ import annotations

import json
import sys

sys.modules["torch_xla"] = None  # type: ignore[assignment]

import torch  # noqa: E402

from fabric_core import Fabric  # noqa: E402
from fabric_xla import XLAAccelerator  # noqa: E402

CALLS = {
    "accelerator='tpu'": {"accelerator": "tpu"},
    "accelerator='xla', devices=1": {"accelerator": "xla", "devices": 1},
    "strategy='xla'": {"strategy": "xla"},
    "strategy='single_xla'": {"strategy": "single_xla"},
    "strategy='xla_fsdp'": {"strategy": "xla_fsdp"},
    "the seed's snippet": {"accelerator": "tpu", "strategy": "xla", "devices": 8, "precision": "bf16-mixed"},
}


def outcome(call: object) -> list[str] | None:
    try:
        call() if callable(call) else Fabric(**call)  # type: ignore[arg-type]
    except Exception as error:
        return [type(error).__name__, str(error)]
    return None


report = {name: outcome(arguments) for name, arguments in CALLS.items()}
assert XLAAccelerator.is_available() is False
cpu = Fabric(accelerator="cpu", devices=1)
print(
    json.dumps(
        {
            "torch": torch.__version__.split("+")[0],
            "errors": report,
            "device_count": XLAAccelerator.device_count(),
            "cpu_alternative": str(cpu.device),
        }
    )
)
