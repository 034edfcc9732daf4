"""The plugin joins through its entry point without importing deepspeed; the parts that need no processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY
from fabric_deepspeed import DeepSpeedCheckpointFormat, DeepSpeedPrecision, consolidate_checkpoint
from fabric_deepspeed._runtime import accelerator_variable


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_nothing_imports_deepspeed_until_a_deepspeed_strategy_runs(tmp_path):
    output = run_python(
        f"""
        import sys
        import fabric_deepspeed, fabric_deepspeed.plugin
        assert "torch" not in sys.modules, "the plugin module or the package imports torch"
        import fabric_core
        from fabric_core.strategies import STRATEGY_REGISTRY
        from fabric_core._registries import CHECKPOINT_FORMAT_REGISTRY
        STRATEGY_REGISTRY.available()
        from fabric_core import Fabric
        fabric = Fabric(accelerator="cpu", devices=2, strategy="deepspeed_stage_3_offload", precision="bf16-mixed")
        from pathlib import Path
        CHECKPOINT_FORMAT_REGISTRY.get_class("deepspeed").detect(Path({str(tmp_path)!r}))
        print("deepspeed" in sys.modules)
        """
    )
    assert output == "False"


def test_the_checkpoint_format_is_registered_and_detects_deepspeed_directories(tmp_path):
    assert CHECKPOINT_FORMAT_REGISTRY.get_class("deepspeed") is DeepSpeedCheckpointFormat
    assert not DeepSpeedCheckpointFormat.detect(tmp_path)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "zero_pp_rank_0_mp_rank_00_model_states.pt").touch()
    assert DeepSpeedCheckpointFormat.detect(tmp_path)
    assert DeepSpeedCheckpointFormat.detect(tmp_path / "checkpoint")


def test_a_stage_0_checkpoint_consolidates_from_its_model_states(tmp_path):
    model = torch.nn.Linear(2, 1).to(torch.bfloat16)
    tag = tmp_path / "checkpoint"
    tag.mkdir()
    (tmp_path / "latest").write_text("checkpoint")
    client = {"fabric": {"module": "net", "optimizer": None, "entries": {"step": 5}}}
    torch.save({"module": model.state_dict(), **client}, tag / "mp_rank_00_model_states.pt")
    state = consolidate_checkpoint(tmp_path)
    assert state.keys() == {"net", "step"} and state["step"] == 5
    assert state["net"]["weight"].dtype == torch.float32
    torch.nn.Linear(2, 1).load_state_dict(state["net"])


def test_a_directory_without_a_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not a DeepSpeed checkpoint.*no 'latest' file"):
        consolidate_checkpoint(tmp_path)


def test_ds_accelerator_is_set_for_cpu_runs_unless_the_user_chose():
    assert accelerator_variable("cpu", {}) == "cpu"
    assert accelerator_variable("cuda", {}) is None
    assert accelerator_variable("cpu", {"DS_ACCELERATOR": "cpu"}) is None
    with pytest.raises(
        RuntimeError, match=r"DS_ACCELERATOR=cuda is set, but Fabric runs DeepSpeed on accelerator='cpu'"
    ):
        accelerator_variable("cpu", {"DS_ACCELERATOR": "cuda"})


def test_precision_plugin_casts_only_at_the_edges():
    mixed = DeepSpeedPrecision("bf16-mixed")
    assert not mixed.is_passthrough and DeepSpeedPrecision("32-true").is_passthrough
    inputs = mixed.convert_input({"x": torch.ones(2), "i": torch.ones(2, dtype=torch.long)})
    assert inputs["x"].dtype == torch.bfloat16 and inputs["i"].dtype == torch.long
    assert mixed.convert_output(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert next(mixed.convert_module(torch.nn.Linear(2, 2)).parameters()).dtype == torch.float32
    true = DeepSpeedPrecision("bf16-true")
    assert next(true.convert_module(torch.nn.Linear(2, 2)).parameters()).dtype == torch.bfloat16
    with true.module_init_context():
        assert torch.nn.Linear(2, 2).weight.dtype == torch.bfloat16
