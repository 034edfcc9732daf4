"""From a REPL (or a notebook kernel) only forked processes can run a training function."""

from __future__ import annotations

import subprocess
import sys

SESSION = """\
import torch
from fabric_core import Fabric
for name in ("ddp", "ddp_spawn"):
    try:
        Fabric(accelerator="cpu", devices=2, strategy=name).launch(lambda fabric: None)
    except RuntimeError as error:
        print("REFUSED", name, str(error).split(".")[0])

def work(fabric):
    return fabric.all_reduce(torch.tensor(fabric.global_rank + 1.0), reduce_op="sum").item()

print("RESULT", Fabric(accelerator="cpu", devices=2, strategy="ddp_notebook").launch(work))
"""


def test_repl_refuses_script_and_spawn_launchers_and_runs_ddp_notebook():
    result = subprocess.run(
        [sys.executable, "-i"], input=SESSION, capture_output=True, text=True, timeout=150
    )
    lines = [line.split(">>> ")[-1].split("... ")[-1] for line in result.stdout.splitlines()]
    refusal = "REFUSED ddp This strategy starts its processes by re-running your script"
    assert any(line.startswith(refusal) for line in lines), result.stdout
    assert any(
        line.startswith("REFUSED ddp_spawn strategy='ddp_spawn' starts fresh interpreters") for line in lines
    ), lines
    assert "RESULT 3.0" in lines, result.stdout + result.stderr
