"""What the tests ask a fresh environment, in one interpreter per environment.

:func:`probe` imports ``fabric_core``, lists every strategy the way ``fabric strategies``
does, notes which heavy modules that imported, then asks ``Fabric`` for one strategy of each
first-party distribution that is not installed and records the error.
"""

from __future__ import annotations

import json
from typing import Any

from venvs import FreshEnvironment

from fabric_core._first_party import STRATEGY_PROVIDERS

CORE_STRATEGIES = frozenset({"single_device", "dp"})
"""The strategies fabric-core registers itself."""

FIRST_PARTY = {
    distribution: frozenset(name for name, provider in STRATEGY_PROVIDERS.items() if provider == distribution)
    for distribution in sorted(set(STRATEGY_PROVIDERS.values()))
}
"""Each first-party plugin distribution and the strategy names it registers."""

ASKED_FOR = {
    "fabric-ddp": "ddp",
    "fabric-fsdp": "fsdp",
    "fabric-deepspeed": "deepspeed_stage_3",
    "fabric-xla": "xla",
}
"""One strategy name of each first-party distribution, asked for where it is not installed."""

HEAVY_MODULES = ("deepspeed", "torch_xla")

_PROBE = """
import json, sys
import fabric_core
from fabric_core._registries import STRATEGY_REGISTRY
from fabric_core.cli.listing import strategy_rows
from fabric_core.plugins import plugin_infos

rows = strategy_rows()
registered = STRATEGY_REGISTRY.available()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
after_listing = sorted(m for m in sys.modules if m.startswith(("fabric_", "torch")) and "." not in m)
plugins = {{i.name: i.as_dict() for i in plugin_infos()}}

from fabric_core import Fabric
errors = {{}}
for name in {asked!r}:
    try:
        Fabric(accelerator="cpu", strategy=name)
        errors[name] = "no error"
    except Exception as error:
        errors[name] = f"{{type(error).__name__}}: {{error}}"
print(json.dumps({{"rows": rows, "registered": registered, "heavy_after_listing": heavy,
                  "top_level_after_listing": after_listing, "plugins": plugins, "errors": errors}}))
"""


def probe(env: FreshEnvironment, installed: set[str]) -> dict[str, Any]:
    """Ask ``env`` (holding the ``installed`` first-party distributions) what the tests check."""
    asked = [name for distribution, name in ASKED_FOR.items() if distribution not in installed]
    result = env.python(_PROBE.format(heavy=set(HEAVY_MODULES), asked=asked))
    return json.loads(result.stdout.strip().splitlines()[-1])


def expected_strategies(installed: set[str]) -> set[str]:
    """The names fabric-core and the ``installed`` first-party distributions register."""
    names = set(CORE_STRATEGIES)
    for distribution in installed:
        names |= FIRST_PARTY.get(distribution, frozenset())
    return names


CROWDED = (
    "fabric-core",
    "fabric-ddp",
    "fabric-throwaway",
    "fabric-broken-plugin",
    "fabric-incompatible-plugin",
    "fabric-duplicate-plugin",
)
"""An environment with good plugins and one of each kind of bad one: it fails to import, it
supports another plugin API version only, it registers a name fabric-core owns."""
