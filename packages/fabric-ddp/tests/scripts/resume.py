"""A loop that resumes from the latest checkpoint and saves when preempted.

Usage: fabric run --devices 2 [--max-restarts 1] resume.py CHECKPOINTS OUT [--die-at N] [--pause-at N]

--die-at N: rank 1 dies (os._exit) after step N, in the first attempt only.
--pause-at N: from step N on, in a restarted attempt, write OUT/paused and go slowly, so the
test can preempt the job (SIGTERM to the launcher) while it trains.
Rank 0 appends what happened to OUT/events.txt and, at the end, saves OUT/params.pt.
"""

import argparse
import os
import time
from datetime import timedelta
from pathlib import Path

import torch
from resume_common import STEPS, batch, loss_of, model, optimizer_of
from seed_snippet import group_timeout

from fabric_core import Fabric
from fabric_core.strategies.parallel import DEFAULT_TIMEOUT
from fabric_core.utilities.checkpoint_manager import CheckpointManager
from fabric_core.utilities.preemption import Preemption

parser = argparse.ArgumentParser()
parser.add_argument("checkpoints")
parser.add_argument("out", type=Path)
parser.add_argument("--die-at", type=int)
parser.add_argument("--pause-at", type=int)
args = parser.parse_args()
attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
fabric.launch()
# no timeout given: the gloo group gets fabric's default, not torch's 30 minutes
assert group_timeout() == DEFAULT_TIMEOUT == timedelta(minutes=5), group_timeout()


def event(text: str) -> None:
    if fabric.is_global_zero:
        with open(args.out / "events.txt", "a") as file:
            file.write(text + "\n")


net = model()
net, optimizer = fabric.setup(net, optimizer_of(net))
state = {"model": net, "optimizer": optimizer}
manager = CheckpointManager(args.checkpoints, keep=2)
start = manager.load(fabric, state) or 0
event(f"attempt {attempt} starts at step {start}")
with Preemption(fabric) as preemption:
    for step in range(start, STEPS):
        x, y = batch(step, fabric.global_rank)
        fabric.backward(loss_of(net, x, y))
        optimizer.step()
        optimizer.zero_grad()
        done = step + 1
        if done % 2 == 0:
            manager.save(fabric, state, done)
        if args.die_at == done and attempt == 0 and fabric.global_rank == 1:
            os._exit(1)
        if args.pause_at is not None and attempt > 0 and done >= args.pause_at:
            (args.out / "paused").touch()
            time.sleep(0.2)
        if preemption.requested():
            manager.save(fabric, state, done)
            event(f"preempted by {preemption.signal or 'a signal to another rank'} after step {done}")
            break
    else:
        event("finished")
        if fabric.is_global_zero:
            torch.save(
                {k: v.detach().clone() for k, v in net.module.state_dict().items()}, args.out / "params.pt"
            )
