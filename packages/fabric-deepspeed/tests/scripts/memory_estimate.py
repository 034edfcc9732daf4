"""Real per-rank bytes of parameters, gradients and optimizer state under DeepSpeed ZeRO 1, 2 and 3.

Usage: python memory_estimate.py OUT_DIR

One launch (two processes) runs the three stages in float32 and bfloat16 in turn; rank 0
writes OUT_DIR/zero<stage>-<precision>.json
with what DeepSpeed's own buffers hold, for the test to compare with ``estimate_memory``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fabric_core import Fabric
from fabric_deepspeed import DeepSpeedStrategy

sys.path.insert(0, str(Path(__file__).parent))
from common import no_ops_compiled

STAGES = (1, 2, 3)
PRECISIONS = ("32-true", "bf16-mixed")


def build() -> nn.Module:
    """One weight above DeepSpeed's stage-3 persistence threshold (1e5 elements), the rest below; odd sizes."""
    return nn.Sequential(nn.Linear(512, 257), nn.Tanh(), nn.Linear(257, 3))


def nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def main(out_dir: Path) -> None:
    for stage, precision in [(stage, precision) for precision in PRECISIONS for stage in STAGES]:
        fabric = Fabric(
            accelerator="cpu", devices=2, strategy=DeepSpeedStrategy(stage=stage), precision=precision
        )
        fabric.launch()
        torch.manual_seed(0)
        net = build()
        model, optimizer = fabric.setup(net, torch.optim.Adam(net.parameters(), lr=0.01))
        zero = fabric.strategy._engines[-1].optimizer
        params = list(model.parameters())
        fabric.backward(model(torch.randn(4, 512)).square().mean())
        # after backward, each rank keeps its partition's gradients (stage 1 too, in this DeepSpeed)
        gradient = nbytes(g for group in zero.averaged_gradients.values() for g in group)
        optimizer.step()
        if stage < 3:
            parameter = nbytes(zero.bit16_groups_flat)
        else:  # the partitions, and whole copies of the parameters under the persistence threshold
            parameter = nbytes(p.ds_tensor for p in params) + nbytes(p.data for p in params if p.ds_persist)
        masters = zero.single_partition_of_fp32_groups if stage < 3 else zero.fp32_partitioned_groups_flat
        state = nbytes(masters)
        state += nbytes(v for s in zero.optimizer.state.values() for v in s.values())
        if fabric.is_global_zero:
            (out_dir / f"zero{stage}-{precision}.json").write_text(
                json.dumps({"parameters": parameter, "gradients": gradient, "optimizer": state})
            )
        fabric.barrier()
    no_ops_compiled()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
