"""Run in a fresh process: one framework's loop from interpreter start to the end of its steps.

Usage: python _footprint_target.py FRAMEWORK STEPS (``FABRIC_BENCH_T0``: the parent's
``time.time()`` just before it started this process)

Prints one JSON line: the seconds ``import torch`` took, the milliseconds the framework's
own import took after it, the seconds from the parent's start of this process to the end of
the first training step, the peak resident memory of this process (VmHWM) after STEPS steps, and
the bytes of the tensors alive then (every storage the garbage collector can reach, counted
once: parameters, gradients, optimizer state, batches).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

IMPORTS = {
    "torch": "pass",
    "fabric": "from fabric_core import Fabric",
    "lightning": "from lightning.fabric import Fabric",
    "accelerate": "from accelerate import Accelerator",
}


def live_tensor_bytes() -> int:
    """Bytes of every tensor storage the garbage collector can reach, each counted once."""
    import torch

    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def main() -> None:
    """Import, set up, train, measure; print the JSON line."""
    framework, steps = sys.argv[1], int(sys.argv[2])
    start = time.perf_counter()
    import torch

    torch_seconds = time.perf_counter() - start
    start = time.perf_counter()
    exec(IMPORTS[framework])
    import_ms = (time.perf_counter() - start) * 1e3
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _loops import LOOPS, make_batches, peak_rss_mib, tiny_model

    batches = make_batches(steps)
    loop = LOOPS[framework](tiny_model(), "32-true")
    loop(batches[:1])
    first_step = time.time() - float(os.environ["FABRIC_BENCH_T0"])
    loop(batches[1:])
    record = {
        "torch_import_s": torch_seconds,
        "import_ms": import_ms,
        "first_step_s": first_step,
        "peak_rss_mib": peak_rss_mib(),
        "tensor_bytes": live_tensor_bytes(),
    }
    print("RESULT " + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
