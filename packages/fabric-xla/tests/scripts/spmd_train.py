"""xla_spmd on every virtual XLA:CPU device of this process (run with CPU_NUM_DEVICES=2).

Prints, as JSON, each run's losses, its final parameters (lists) and the sharding XLA
recorded for the parameters and a batch.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
import torch_xla
from xla_helpers import cpu_state, make_model, make_optimizer, train

from fabric_core import Fabric
from fabric_xla import XLASPMDStrategy


def run(mesh_shape: tuple[int, int] | None, folder: Path) -> dict[str, object]:
    fabric = Fabric(strategy=XLASPMDStrategy(mesh_shape=mesh_shape), devices=-1)
    fabric.launch()
    model = make_model()
    model, optimizer = fabric.setup(model, make_optimizer(model, "adam"))
    losses = train(fabric, model, optimizer)
    trained = cpu_state(model)
    batch = fabric.to_device(torch.randn(8, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fabric.to_device(torch.randn(5, 4))
    fabric.save(folder / "spmd.pt", {"model": model, "optimizer": optimizer})
    saved = torch.load(folder / "spmd.pt")
    saved_matches = all(torch.equal(saved["model"][key], value) for key, value in trained.items())
    fresh = make_model()
    fresh_optimizer = make_optimizer(fresh, "adam")
    fresh, fresh_optimizer = fabric.setup(fresh, fresh_optimizer)
    fabric.load(folder / "spmd.pt", {"model": fresh, "optimizer": fresh_optimizer})
    resumed = train(fabric, fresh, fresh_optimizer, steps=1)
    continued = train(fabric, model, optimizer, steps=1)
    spec = torch_xla._XLAC._get_xla_sharding_spec
    strategy = fabric.strategy
    reduced = strategy.reduce(3.0, None, None)
    fabric.strategy.mark_step()
    fabric.barrier()
    return {
        "losses": losses,
        "state": {key: value.tolist() for key, value in trained.items()},
        "saved_devices": sorted({t.device.type for t in saved["model"].values()}),
        "saved_matches": saved_matches,
        "resumed": resumed,
        "continued": continued,
        "parameter_specs": [spec(p) for p in model.parameters()],
        "loaded_specs": [spec(p) for p in fresh.parameters()],
        "batch_spec": spec(batch),
        "uneven_warning": [str(w.message) for w in caught],
        "world_size": fabric.world_size,
        "sampler": fabric.strategy.distributed_sampler_kwargs,
        # one process: the base class's collectives (numbers become tensors on the SPMD device)
        "reduced_number": [reduced.device.type, reduced.item()],
        "gathered_number": strategy.all_gather(2).cpu().tolist(),
        "broadcast": strategy.broadcast({"epoch": 1}),
    }


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    shapes = {"fsdp": None, "data": (2, 1)}
    print(json.dumps({name: run(shape, folder / name) for name, shape in shapes.items()}))
