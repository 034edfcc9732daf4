"""estimate_memory and `fabric estimate`: what one process holds, and one clear message per mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fabric_core.utilities import MemoryEstimate, estimate_memory
from fabric_core.utilities.memory import load_model_factory


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 17), nn.ReLU(), nn.Linear(17, 5))


def real_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_the_default_estimate_counts_every_parameter_byte_and_builds_on_meta():
    calls: list[bool] = []

    def factory() -> nn.Module:
        model = build()
        calls.append(all(p.is_meta for p in model.parameters()))
        return model

    estimate = estimate_memory(factory, optimizer="adam")

    assert calls == [True]
    assert estimate.parameter_bytes == real_bytes(build())
    assert estimate.gradient_bytes == estimate.parameter_bytes
    assert estimate.optimizer_bytes == 2 * estimate.parameter_bytes + 4 * len(list(build().parameters()))
    assert estimate.total_bytes == sum(
        estimate.as_dict()[k] for k in ("parameter_bytes", "gradient_bytes", "optimizer_bytes")
    )


def test_the_estimate_matches_a_real_adam_step_and_follows_the_precision():
    model = build()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 32)).sum().backward()
    optimizer.step()
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values())

    estimate = estimate_memory(build, optimizer="adam")
    assert estimate.optimizer_bytes == state
    assert estimate_memory(build, optimizer="sgd").optimizer_bytes == 0
    assert estimate_memory(build, precision="bf16-true").parameter_bytes == real_bytes(build()) // 2
    assert estimate_memory(build, precision="bf16-mixed").parameter_bytes == real_bytes(build())
    assert estimate_memory(build()).world_size == 1  # a built model works too


def test_the_table_and_the_dict():
    # fabric-core alone has no multi-process CPU strategy: fabric-ddp's tests cover devices=N
    estimate = estimate_memory(build)
    assert isinstance(estimate, MemoryEstimate)
    table = estimate.table()
    assert table.splitlines()[0].startswith("strategy=auto world_size=1")
    assert any(
        line.startswith("total") and f"{estimate.total_bytes:,}" in line for line in table.splitlines()
    )
    assert json.loads(json.dumps(estimate.as_dict()))["total_bytes"] == estimate.total_bytes


def test_an_unknown_optimizer_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"optimizer='lion'.*sgd, sgd-momentum, adam, adamw"):
        estimate_memory(build, optimizer="lion")


def test_a_factory_that_does_not_return_a_module_says_so():
    def not_a_model() -> dict[str, int]:
        return {}

    with pytest.raises(TypeError, match=r"returned dict, not an nn\.Module"):
        estimate_memory(not_a_model, optimizer="adam")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"needs an nn\.Module, a function"):
        estimate_memory(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no_colon", "must name a function"),
        ("no_such_module_xyz:build", "no module named 'no_such_module_xyz'"),
        ("missing.py:build", "does not exist"),
        ("json:nothing_here", "defines no 'nothing_here'"),
        ("json:__doc__", "not a function"),
    ],
)
def test_a_bad_model_spec_gives_one_clear_message(spec, words):
    with pytest.raises(ValueError, match=words):
        load_model_factory(spec)


def test_a_script_path_spec_loads_its_factory(tmp_path: Path):
    script = tmp_path / "models.py"
    script.write_text("from torch import nn\n\ndef build():\n    return nn.Linear(4, 3)\n")
    assert estimate_memory(f"{script}:build", optimizer="sgd").parameter_bytes == (4 * 3 + 3) * 4


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric_core", "estimate", *args], capture_output=True, text=True, timeout=120
    )


def test_the_cli_prints_the_table_and_json(tmp_path: Path):
    script = tmp_path / "models.py"
    script.write_text("from torch import nn\n\ndef build():\n    return nn.Linear(4, 3)\n")

    table = _cli("--model", f"{script}:build", "--optimizer", "sgd")
    assert table.returncode == 0, table.stderr
    assert "strategy=auto world_size=1" in table.stdout and "parameters" in table.stdout

    as_json = _cli("--model", f"{script}:build", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["parameter_bytes"] == 60

    mistake = _cli("--model", "no_colon")
    assert mistake.returncode == 2
    assert mistake.stderr.strip().startswith("fabric estimate: Model spec 'no_colon'")
    assert len(mistake.stderr.strip().splitlines()) == 1
