"""``fabric plugin new``: the files it writes, the names it refuses, and the promises the guide makes.

Fast and in-process: the scaffold is written into ``tmp_path`` and nothing is installed. The
single-device plugin is made discoverable by writing its entry point next to its sources;
tests-integration/test_plugin_scaffold.py installs a DDP one into a fresh environment.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from core_helpers import run_python, write_distribution
from torch import nn

from fabric_core import Fabric
from fabric_core.__about__ import __version__
from fabric_core.cli import main
from fabric_core.cli.plugin_scaffold import CORE_STRATEGIES, ScaffoldError, check_name, scaffold_plugin
from fabric_core.precision.amp import MixedPrecision
from fabric_core.strategies import STRATEGY_REGISTRY
from fabric_core.testing import StrategyConformance

FILES = [
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "src/fabric_my_sgd/__init__.py",
    "src/fabric_my_sgd/plugin.py",
    "src/fabric_my_sgd/strategy.py",
    "tests/test_conformance.py",
]


def test_new_writes_a_complete_ddp_plugin_and_prints_the_next_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugin", "new", "my_sgd", "--dir", str(tmp_path)]) == 0

    root = tmp_path / "fabric-my-sgd"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(FILES)
    out = capsys.readouterr().out
    assert all(f"  {name}\n" in out for name in FILES), out
    assert f"cd {root}" in out and 'pip install -e ".[test]"' in out and "pytest" in out
    assert "my_sgd, my_sgd_spawn, my_sgd_fork" in out
    project = (root / "pyproject.toml").read_text()  # tomllib is not in Python 3.10
    for line in [
        'build-backend = "hatchling.build"',
        'name = "fabric-my-sgd"',
        f'dependencies = ["fabric-core>={__version__}", "fabric-ddp>={__version__}"]',
        '[project.entry-points.fabric]\nmy_sgd = "fabric_my_sgd.plugin"',
        'packages = ["src/fabric_my_sgd"]',
    ]:
        assert f"\n{line}\n" in project, line
    for name in FILES:
        if name.endswith(".py"):
            ast.parse((root / name).read_text(), filename=name)
    strategy = (root / "src/fabric_my_sgd/strategy.py").read_text()
    assert "class MySgdStrategy(DDPStrategy):" in strategy and "unscale_gradients(optimizer)" in strategy
    plugin = (root / "src/fabric_my_sgd/plugin.py").read_text()
    assert plugin.count("_STRATEGY,\n") == 3 and "FABRIC_PLUGIN_API = (1,)" in plugin
    test = (root / "tests/test_conformance.py").read_text()
    assert 'strategy = "my_sgd"' in test and 'update = "own"' in test
    assert "fabric-my-sgd" in (root / "README.md").read_text() and "license" in (root / "LICENSE").read_text()


def test_python_m_fabric_core_writes_a_package_whose_import_loads_no_torch(tmp_path: Path) -> None:
    written = run_python(
        f"import sys; sys.argv = ['fabric', 'plugin', 'new', 'my_sgd', '--dir', {str(tmp_path)!r}]; "
        "import runpy; runpy.run_module('fabric_core', run_name='__main__')"
    )
    assert written.returncode == 0, written.stderr

    imported = run_python(
        "import sys, fabric_my_sgd, fabric_my_sgd.plugin\n"
        "assert 'torch' not in sys.modules, 'importing the plugin imported torch'\n"
        "print(fabric_my_sgd.__all__)",
        extra_path=tmp_path / "fabric-my-sgd" / "src",
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "['MySgdStrategy', '__version__']"


@pytest.fixture
def solo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugins: None) -> Iterator[Path]:
    """A single-device plugin ``solo`` written by the scaffold, discoverable as if installed."""
    result = scaffold_plugin("solo", tmp_path, base="single")
    source = result.root / "src"
    write_distribution(source, "fabric-solo", {"solo": "fabric_solo.plugin"})
    monkeypatch.syspath_prepend(str(source))
    yield result.root
    for name in [name for name in sys.modules if name == "fabric_solo" or name.startswith("fabric_solo.")]:
        del sys.modules[name]


def test_a_single_device_plugin_registers_its_name_and_passes_the_conformance_kit(solo: Path) -> None:
    entry = STRATEGY_REGISTRY.entry("solo")
    assert (entry.provider, entry.target_path) == ("fabric-solo", "fabric_solo.strategy:SoloStrategy")
    assert repr(STRATEGY_REGISTRY.build("solo", max_grad_norm=0.5)) == "SoloStrategy(max_grad_norm=0.5)"

    # The scaffold's tests/test_conformance.py runs this and the unclipped default (its update
    # is plain PyTorch's); one run here, of the path that clips, keeps the test short.
    StrategyConformance("solo", world_size=1, init_args={"max_grad_norm": 0.01}, update="own").run()


@pytest.mark.parametrize("value", [0, -1.0, True, "1"])
def test_the_scaffolded_strategy_refuses_a_bad_max_grad_norm(solo: Path, value: object) -> None:
    with pytest.raises(ValueError, match="must be a positive number, or None to clip nothing"):
        STRATEGY_REGISTRY.build("solo", max_grad_norm=value)


def test_the_scaffolded_strategy_clips_true_gradients_under_loss_scaling_even_after_the_user_clipped(
    solo: Path,
) -> None:
    """Unscaling twice in one step (the user's clip_gradients, then the strategy's) is safe and exact."""
    strategy = STRATEGY_REGISTRY.build("solo", max_grad_norm=0.5)
    fabric = Fabric(accelerator="cpu", strategy=strategy, plugins=MixedPrecision("16-mixed", "cpu"))
    torch.manual_seed(0)
    layer = nn.Linear(4, 1)
    model, optimizer = fabric.setup(layer, torch.optim.SGD(layer.parameters(), lr=1.0))
    before = [p.detach().clone() for p in model.parameters()]
    fabric.backward(model(torch.ones(1, 4)).sum() / 2)  # gradients 0.5 (32768 when scaled)

    norm = fabric.clip_gradients(model, optimizer, max_norm=1e6)  # unscales once: the true norm
    optimizer.step()  # the strategy unscales again (a no-op), clips to 0.5, steps

    assert norm.item() == pytest.approx(1.25**0.5, rel=1e-3), "clip_gradients measured scaled gradients"
    moved = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before)])
    assert moved.norm().item() == pytest.approx(0.5, rel=1e-3)  # lr 1: the step is the clipped gradient


def test_unscale_gradients_twice_before_a_step_divides_once() -> None:
    precision = MixedPrecision("16-mixed", "cpu")
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # the second step shows the record is cleared by the scaler's update
        precision.backward(model(torch.ones(3, 2)).sum(), model)
        precision.unscale_gradients(optimizer)
        once = model.weight.grad.clone()
        precision.unscale_gradients(optimizer)
        assert torch.equal(model.weight.grad, once)
        assert torch.allclose(once, torch.full((1, 2), 3.0))
        precision.optimizer_step(optimizer)
        optimizer.zero_grad()


@pytest.mark.parametrize(
    ("name", "base", "message"),
    [
        ("My-SGD", "ddp", r"'My-SGD' is not a valid plugin name: .* \(e.g. 'my_sgd'\)"),
        ("1sgd", "ddp", "'1sgd' is not a valid plugin name: use lowercase letters"),
        ("my__sgd", "ddp", "'my__sgd' is not a valid plugin name"),
        ("", "ddp", "'' is not a valid plugin name"),
        ("fabric", "ddp", "leave out the 'fabric' prefix.*'fabric' on its own is reserved"),
        ("fabric_sgd", "ddp", "leave out the 'fabric' prefix.*pass 'sgd'"),
        ("ddp", "ddp", "'ddp' clashes with the strategy name 'ddp' of fabric-ddp"),
        ("dp", "single", "'dp' clashes with the strategy name 'dp' of fabric-core"),
        ("single_device", "single", "clashes with the strategy name 'single_device' of fabric-core"),
        ("ddp_notebook", "single", "clashes with the strategy name 'ddp_notebook' of fabric-ddp"),
        ("xla", "single", "clashes with the strategy name 'xla' of fabric-xla"),
        ("core", "ddp", "'core' is the plugin name of fabric's own registrations"),
        ("ddp_clip", "ddp", r"begins with 'ddp_'.*does not reserve it.*e.g. 'myorg_clip'"),
        ("fsdp_x", "single", "begins with 'fsdp_', the prefix of fabric-fsdp's strategy names"),
    ],
)
def test_names_that_are_malformed_or_clash_are_refused_with_one_message_each(
    name: str, base: str, message: str
) -> None:
    with pytest.raises(ScaffoldError, match=message):
        check_name(name, base)


def test_a_variant_name_that_clashes_is_refused_for_ddp_only() -> None:
    # "deepspeed_stage_1" is taken; "deepspeed_stage" registers no variant called that.
    check_name("mine_spawn", "ddp")
    with pytest.raises(ScaffoldError, match="'deepspeed_stage_1' of fabric-deepspeed"):
        check_name("deepspeed_stage_1", "single")


def test_an_existing_non_empty_directory_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fabric-my-sgd").mkdir()
    (tmp_path / "fabric-my-sgd" / "notes.txt").write_text("mine")

    assert main(["plugin", "new", "my_sgd", "--dir", str(tmp_path)]) == 2

    error = capsys.readouterr().err
    assert error.startswith("fabric plugin new: ") and "is not empty: nothing was written" in error
    assert [p.name for p in (tmp_path / "fabric-my-sgd").iterdir()] == ["notes.txt"]
    (tmp_path / "fabric-other").mkdir()  # an empty one is used
    assert scaffold_plugin("other", tmp_path).root == tmp_path / "fabric-other"


def test_a_refused_name_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugin", "new", "ddp", "--dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("fabric plugin new: 'ddp' clashes with")
    assert list(tmp_path.iterdir()) == []
    assert main(["plugin"]) == 2
    assert "fabric plugin new NAME" in capsys.readouterr().err


def test_the_core_names_it_refuses_are_those_fabric_core_registers(fresh_plugins: None) -> None:
    core = [entry.name for entry in STRATEGY_REGISTRY.entries() if entry.provider == "fabric-core"]
    assert tuple(core) == CORE_STRATEGIES
