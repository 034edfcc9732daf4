"""Context parallelism: refused with one message where it cannot run; on 2 GPUs, equal to one process.

torch's ring attention replaces the CUDA kernels of scaled_dot_product_attention, so the
training test needs 2 CUDA devices and runs only where they exist.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SCRIPTS
from fsdp_common import run_script

from fabric_core import Fabric
from fabric_fsdp import ModelParallelStrategy


def test_context_parallelism_on_a_cpu_names_the_missing_hardware():
    with pytest.raises(ValueError, match=r"context_parallel_size=2\) needs CUDA devices.*this run is on cpu"):
        Fabric(accelerator="cpu", devices=2, strategy=ModelParallelStrategy(context_parallel_size=2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context_parallel_size": 0}, "context_parallel_size=0"),
        (
            {"context_parallel_size": 2, "pipeline_parallel_size": 2, "pipeline_split": ["1"]},
            "cannot be combined",
        ),
        ({"context_parallel_size": 2, "data_parallel_replicate_size": 2}, "cannot be combined"),
    ],
)
def test_context_parallel_options_that_cannot_work_get_one_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelParallelStrategy(**kwargs)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="context parallelism needs 2 CUDA devices")
def test_two_processes_sharing_each_sequence_match_one_process(tmp_path):
    from cp_train import train

    run_script(str(SCRIPTS / "cp_train.py"), str(tmp_path))
    losses = json.loads((tmp_path / "losses.json").read_text())
    expected = train(Fabric(accelerator="cuda", devices=1))
    torch.testing.assert_close(losses, expected, rtol=2e-4, atol=0)
