"""The files ``fabric plugin new`` writes, as templates filled in by `render`.

Placeholders are ``$``-substitutions (`string.Template`), which no template uses otherwise, so
the Python and TOML they produce keep their braces. Every template renders to a file that
passes ``ruff check`` and ``ruff format --check`` with fabric's own settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import Literal

__all__ = ["Base", "PluginNames", "render"]

Base = Literal["ddp", "single"]


@dataclass(frozen=True)
class PluginNames:
    """Every name derived from the one given to ``fabric plugin new``.

    Attributes:
        name: The strategy and entry-point name (``"my_sgd"``).
        base: What the strategy subclasses: ``"ddp"`` (`DDPStrategy`) or ``"single"``
            (`SingleDeviceStrategy`).
        core_version: The fabric-core version the plugin depends on at least.
    """

    name: str
    base: Base
    core_version: str

    @property
    def package(self) -> str:
        """The import package, ``fabric_my_sgd``."""
        return f"fabric_{self.name}"

    @property
    def distribution(self) -> str:
        """The distribution (and directory) name, ``fabric-my-sgd``."""
        return f"fabric-{self.name.replace('_', '-')}"

    @property
    def class_name(self) -> str:
        """The strategy class, ``MySgdStrategy``."""
        return "".join(part.capitalize() for part in self.name.split("_")) + "Strategy"

    @property
    def strategy_names(self) -> tuple[str, ...]:
        """The names the plugin registers: one per way of starting processes for ``ddp``."""
        if self.base == "ddp":
            return (self.name, f"{self.name}_spawn", f"{self.name}_fork")
        return (self.name,)


_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "$distribution"
version = "0.1.0"
description = "$summary"
readme = "README.md"
requires-python = ">=3.10"
# A lower bound only: FABRIC_PLUGIN_API in plugin.py, not fabric-core's version, says whether they fit.
dependencies = [$dependencies]

[project.optional-dependencies]
test = ["pytest>=8"]

# fabric imports this module (registrations only) the first time anything asks for a strategy name.
[project.entry-points.fabric]
$name = "$package.plugin"

[tool.hatch.build.targets.wheel]
packages = ["src/$package"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

_INIT = '''\
"""$distribution: $summary

``$class_name`` is imported on first access (PEP 562), so importing the package, which
fabric does while it discovers plugins, imports neither torch nor the strategy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from $package.strategy import $class_name

__all__ = ["$class_name", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "$class_name":
        from $package.strategy import $class_name

        return $class_name
    raise AttributeError(f"module '$package' has no attribute '{name}'")
'''

_PLUGIN_DDP = '''\
"""The module the ``fabric`` entry point names: it registers names and imports nothing heavy.

Each name is registered as a ``"module:Class"`` path, so ``$package.strategy`` (and torch)
is imported only when someone builds one of these strategies.
"""

from __future__ import annotations

from fabric_core import hookimpl
from fabric_core.registry import Registry

FABRIC_PLUGIN_API = (1,)
"""The fabric plugin API versions this module implements; fabric skips it if its own is not listed."""

_STRATEGY = "$package.strategy:$class_name"
# Import names the class needs beyond its own package (which is always checked); torch and
# fabric_core are always there. `fabric strategies` reports a missing one instead of failing on use.
_REQUIRES = ("fabric_ddp",)


@hookimpl
def fabric_register_strategies(registry: Registry) -> None:
    """Register ``$name`` and its spawn and fork variants."""
    description = "DDP that clips gradients before each step; {}"
    registry.register(
        "$name",
        _STRATEGY,
        description=description.format("re-runs the script in each process"),
        requires=_REQUIRES,
        start_method="popen",  # keyword arguments for $class_name(...): the name's defaults
    )
    registry.register(
        "${name}_spawn",
        _STRATEGY,
        description=description.format("runs fabric.launch(fn) in spawned processes"),
        requires=_REQUIRES,
        start_method="spawn",
    )
    registry.register(
        "${name}_fork",
        _STRATEGY,
        description=description.format("runs fabric.launch(fn) in forked processes"),
        requires=_REQUIRES,
        start_method="fork",
    )
'''

_PLUGIN_SINGLE = '''\
"""The module the ``fabric`` entry point names: it registers names and imports nothing heavy.

The name is registered as a ``"module:Class"`` path, so ``$package.strategy`` (and torch)
is imported only when someone builds the strategy.
"""

from __future__ import annotations

from fabric_core import hookimpl
from fabric_core.registry import Registry

FABRIC_PLUGIN_API = (1,)
"""The fabric plugin API versions this module implements; fabric skips it if its own is not listed."""


@hookimpl
def fabric_register_strategies(registry: Registry) -> None:
    """Register ``$name``."""
    registry.register(
        "$name",
        "$package.strategy:$class_name",
        description="One device, with gradients clipped before each step",
        # Keyword arguments here are the name's defaults for $class_name(...), e.g. max_grad_norm=1.0.
        # requires=("some_module",) would name import packages the class needs beyond its own.
    )
'''

_STRATEGY = '''\
"""``$class_name``: $base_title, with the gradients clipped before every step.

A working starting point: replace what `optimizer_step` does with your strategy's own.
"""

from __future__ import annotations

from typing import Any

import torch
from $base_module import $base_class
from torch.optim import Optimizer

__all__ = ["$class_name"]


class $class_name($base_class):
    """$base_title that clips the gradients to a maximum norm before every step.

    $gradients
    With ``max_grad_norm=None`` (the default) it is plain ``$base_class``.

    Args:
        max_grad_norm: The largest total gradient norm; larger gradients are scaled
            down. ``None`` clips nothing.
        **kwargs: Passed to ``$base_class`` ($kwargs).

    Raises:
        ValueError: ``max_grad_norm`` is not a positive number.
    """

    def __init__(self, max_grad_norm: float | None = None, **kwargs: Any) -> None:
        # This class's own arguments are named parameters, so they are taken here and
        # only the rest reaches $base_class, which refuses what it does not know.
        if max_grad_norm is not None and not _positive(max_grad_norm):
            raise ValueError(
                f"max_grad_norm={max_grad_norm!r} must be a positive number, "
                "or None to clip nothing."
            )
        super().__init__(**kwargs)
        self.max_grad_norm = max_grad_norm

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Clip the gradients, then step through the precision plugin."""
        if self.max_grad_norm is not None:
            # Under 16-mixed the gradients are still multiplied by the loss scale here.
            # Unscaling gives their true values; it does nothing without a scaler and
            # nothing the second time in a step (after fabric.clip_gradients, say), and
            # the step that follows does not unscale them again.
            self.precision.unscale_gradients(optimizer)
            parameters = [
                p
                for group in optimizer.param_groups
                for p in group["params"]
                if p.grad is not None
            ]
            torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        return super().optimizer_step(optimizer, **kwargs)

    def __repr__(self) -> str:
        return f"$class_name(max_grad_norm={self.max_grad_norm})"


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
'''

_CONFORMANCE_DDP = '''\
"""$class_name keeps the Strategy contract: fabric-core's conformance kit, in 2 CPU processes.

Both classes share one launch of the processes (``launch_group``); every check is reported
as a test of its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fabric_core.testing import StrategyConformanceSuite


class Test${camel}Conformance(StrategyConformanceSuite):
    """Without clipping the update is DDP's: training must match one process on the global batch."""

    strategy = "$name"  # a registered name; the kit starts the processes with the elastic agent
    world_size = 2
    tolerance = 1e-6
    launch_group = "$name"


class Test${camel}ClippingConformance(Test${camel}Conformance):
    """Clipping changes the update on purpose, so the replicas must agree with each other instead.

    ``update = "own"``: the training checks give every rank the same batches and require the
    same outputs on every rank after every step (replica consistency) rather than comparing
    with plain PyTorch on the global batch. ``setup`` and ``checkpoint`` still compare numbers.
    """

    init_args: ClassVar[dict[str, Any]] = {"max_grad_norm": 0.01}
    update = "own"
'''

_CONFORMANCE_SINGLE = '''\
"""$class_name keeps the Strategy contract: fabric-core's conformance kit, in this process.

Every check is reported as a test of its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fabric_core.testing import StrategyConformanceSuite


class Test${camel}Conformance(StrategyConformanceSuite):
    """Without clipping the update is plain PyTorch's: training must match it."""

    strategy = "$name"
    world_size = 1
    tolerance = 1e-6


class Test${camel}ClippingConformance(Test${camel}Conformance):
    """Clipping changes the update on purpose: ``update = "own"`` drops the comparison with plain PyTorch."""

    init_args: ClassVar[dict[str, Any]] = {"max_grad_norm": 0.01}
    update = "own"
'''

_README = """\
# $distribution

$summary

$class_name subclasses `$base_class` and clips the gradients to `max_grad_norm` in
`optimizer_step`. It was written by `fabric plugin new $name`: a working plugin to change
into your own strategy.

## Use it

```bash
pip install $distribution
```

```python
from fabric_core import Fabric
from $package import $class_name

fabric = Fabric(strategy=$class_name(max_grad_norm=1.0)$devices)
```

`Fabric(strategy="$name")` builds it with the arguments registered in
`src/$package/plugin.py`.$run_note

| name | what it is |
|---|---|
$table

## Develop it

```bash
pip install -e ".[test]"
fabric plugins      # $name ($distribution 0.1.0) [loaded]
fabric strategies   # $names
pytest              # tests/test_conformance.py: fabric-core's conformance kit
```

```text
$layout
```

fabric's guide "Write a strategy plugin" says what to override, what the conformance checks
compare, and how to publish. Choose a license before publishing: see `LICENSE`.
"""

_LICENSE = """\
No license has been chosen for $distribution yet.

Replace this file with the text of the license you choose (https://choosealicense.com
helps) and add its SPDX identifier to pyproject.toml, e.g. license = "Apache-2.0", before
you publish: without one, nobody else may use, copy or change the code.
"""

_DDP_RUN_NOTE = """ Under `fabric run`, name it on the command line and the processes
are started for you:

```bash
fabric run --devices 2 --strategy $name train.py
```

`fabric run` passes a name only; for other arguments, build the strategy in the script (as
above) and leave `--strategy` out, or register a name with other defaults in `plugin.py`."""

_SINGLE_RUN_NOTE = """ `fabric run --strategy $name train.py` runs the script with it
(one device: `--devices 1`). `fabric run` passes a name only; for other arguments, build the
strategy in the script (as above) and leave `--strategy` out."""

_TABLE_ROWS = {
    "ddp": [
        ("$name", "re-runs the script in each process (or joins `fabric run`, `torchrun`, `srun`)"),
        ("${name}_spawn", "runs `fabric.launch(fn)` in spawned processes"),
        ("${name}_fork", "runs `fabric.launch(fn)` in forked processes (notebooks)"),
    ],
    "single": [("$name", "one process on one device")],
}

_BASES = {
    "ddp": {
        "base_module": "fabric_ddp",
        "base_class": "DDPStrategy",
        "base_title": "DistributedDataParallel",
        "summary_title": "DistributedDataParallel",
        "gradients": "In ``optimizer_step`` every replica holds the gradients DDP averaged.",
        "kwargs": "``start_method``, ``process_group_backend``, ``timeout``,\n"
        "            ...; the rest to ``DistributedDataParallel``: ``find_unused_parameters``, ...",
        "devices": ', accelerator="cpu", devices=2',
    },
    "single": {
        "base_module": "fabric_core.strategies",
        "base_class": "SingleDeviceStrategy",
        "base_title": "One device",
        "summary_title": "one device",
        "gradients": "In ``optimizer_step`` the gradients are those of the backward passes.",
        "kwargs": "``device``, ``accelerator``, ``checkpoint_io``, ``precision_plugin``",
        "devices": "",
    },
}


def render(names: PluginNames) -> dict[str, str]:
    """The files of a new plugin, by path relative to its directory, filled in for ``names``."""
    base = _BASES[names.base]
    dependencies = ['"fabric-core>=' + names.core_version + '"']
    if names.base == "ddp":
        dependencies.append('"fabric-ddp>=' + names.core_version + '"')
    values = {
        "name": names.name,
        "package": names.package,
        "distribution": names.distribution,
        "class_name": names.class_name,
        "camel": names.class_name.removesuffix("Strategy"),
        "summary": f"A strategy plugin for fabric: {base['summary_title']} with gradient clipping.",
        "dependencies": ", ".join(dependencies),
        "names": ", ".join(names.strategy_names),
        **base,
    }

    def fill(template: str) -> str:
        return Template(template).substitute(values)

    values["run_note"] = fill(_DDP_RUN_NOTE if names.base == "ddp" else _SINGLE_RUN_NOTE)
    values["layout"] = _layout(names)
    values["table"] = "\n".join(f"| `{fill(row)}` | {text} |" for row, text in _TABLE_ROWS[names.base])
    source = f"src/{names.package}"
    ddp = names.base == "ddp"
    return {
        "pyproject.toml": fill(_PYPROJECT),
        "README.md": fill(_README),
        "LICENSE": fill(_LICENSE),
        f"{source}/__init__.py": fill(_INIT),
        f"{source}/plugin.py": fill(_PLUGIN_DDP if ddp else _PLUGIN_SINGLE),
        f"{source}/strategy.py": fill(_STRATEGY),
        "tests/test_conformance.py": fill(_CONFORMANCE_DDP if ddp else _CONFORMANCE_SINGLE),
    }


def _layout(names: PluginNames) -> str:
    """The README's picture of the files, one per line with what it is."""
    source = f"src/{names.package}"
    rows = [
        ("pyproject.toml", "the distribution; [project.entry-points.fabric] names plugin.py"),
        (f"{source}/__init__.py", "the public name, imported lazily"),
        (f"{source}/plugin.py", "the entry point: registrations only, nothing heavy"),
        (f"{source}/strategy.py", names.class_name),
        ("tests/test_conformance.py", "the conformance kit of fabric-core"),
        ("LICENSE", "a note: choose a license"),
    ]
    width = max(len(path) for path, _ in rows) + 2
    return "\n".join([f"{names.distribution}/", *(f"  {path:<{width}}{what}" for path, what in rows)])
