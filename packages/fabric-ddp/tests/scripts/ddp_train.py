"""Train with DDP on 2 CPU processes and check every collective along the way.

Usage: python ddp_train.py OUT_DIR [--launch script|spawn|fork|none] [--strategy NAME]

``--launch script`` calls ``fabric.launch()`` (processes re-run this script), ``spawn``
and ``fork`` call ``fabric.launch(fn)``, ``none`` expects the processes to exist already
(fabric run, torchrun, srun). Rank 0 saves the trained parameters to OUT_DIR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import EPOCHS, PER_RANK_BATCH, SAMPLES, model, train

from fabric_core import Fabric


def check_collectives(fabric: Fabric) -> None:
    rank, world = fabric.global_rank, fabric.world_size
    assert world == 2 and rank in (0, 1) and fabric.is_global_zero == (rank == 0)
    assert fabric.node_rank * fabric.strategy.num_processes + fabric.local_rank == rank
    value = torch.tensor([float(rank + 1)])
    assert fabric.all_reduce(value.clone(), reduce_op="sum").item() == 3.0
    assert fabric.all_reduce(value.clone(), reduce_op="mean").item() == 1.5
    assert fabric.all_reduce(value.clone(), reduce_op="max").item() == 2.0
    gathered = fabric.all_gather(torch.full((3,), float(rank)))
    assert gathered.shape == (2, 3) and gathered[1].tolist() == [1.0, 1.0, 1.0], gathered
    nested = fabric.all_gather({"a": torch.tensor(rank)})
    assert nested["a"].tolist() == [0, 1]
    leaf = torch.ones(2, requires_grad=True)
    fabric.all_gather(leaf * (rank + 1), sync_grads=True).sum().backward()
    assert leaf.grad is not None and leaf.grad.tolist() == [2.0 * (rank + 1)] * 2, leaf.grad
    assert fabric.broadcast({"from": rank, "list": [rank]}) == {"from": 0, "list": [0]}
    assert fabric.broadcast(torch.tensor([rank + 10])).item() == 10
    assert fabric.strategy.reduce_boolean_decision(rank == 0, all=False) is True
    assert fabric.strategy.reduce_boolean_decision(rank == 0, all=True) is False
    fabric.barrier("named")
    with fabric.rank_zero_first():
        pass
    # the distributed sampler gives each rank its own half of the data
    loader = fabric.setup_dataloaders(
        torch.utils.data.DataLoader(torch.arange(SAMPLES), batch_size=PER_RANK_BATCH)
    )
    seen = torch.cat(list(loader))
    everything = fabric.all_gather(seen).flatten().sort().values
    assert everything.tolist() == list(range(SAMPLES)), everything


def run(fabric: Fabric, out_dir: str, accumulate: bool) -> None:
    check_collectives(fabric)
    net = train(fabric, accumulate=accumulate)
    if fabric.is_global_zero:
        torch.save(net.state_dict(), Path(out_dir) / "params.pt")
    # a checkpoint written by rank 0 is read back by every rank into a fresh model
    path = Path(out_dir) / "checkpoint.pt"
    fabric.save(path, {"model": net, "epochs": EPOCHS})
    restored = fabric.setup(model())
    state = {"model": restored, "epochs": 0}
    remainder = fabric.load(path, state)
    assert remainder == {} and state["epochs"] == EPOCHS
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, restored.state_dict()[name]), name


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--launch", default="script", choices=["script", "spawn", "fork", "none"])
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--accumulate", action="store_true")
    parser.add_argument("--devices", default="2")
    args = parser.parse_args()
    if args.launch == "none":
        fabric = Fabric(strategy=args.strategy)
    else:
        fabric = Fabric(accelerator="cpu", devices=int(args.devices), strategy=args.strategy)
    if args.launch in ("spawn", "fork"):
        fabric.launch(run, args.out_dir, args.accumulate)
    else:
        fabric.launch()
        run(fabric, args.out_dir, args.accumulate)
