"""DDPStrategy's constructor follows the seed: its parameters, by position, in its order, with its defaults.

These tests build strategies without starting processes; the 2-process runs are in test_ddp.py.
"""

from __future__ import annotations

import inspect
import sys
from datetime import timedelta

import pytest
import torch
from conftest import SCRIPTS
from test_ddp import run
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from fabric_core.environments.local import LocalEnvironment
from fabric_core.io.checkpoint_io import TorchCheckpointIO
from fabric_core.precision.double import DoublePrecision
from fabric_core.strategies import STRATEGY_REGISTRY
from fabric_core.strategies.parallel import DEFAULT_TIMEOUT
from fabric_ddp import DDPStrategy

SEED_PARAMETERS = [
    ("parallel_devices", None),
    ("cluster_environment", None),
    ("checkpoint_io", None),
    ("precision_plugin", None),
    ("ddp_comm_state", None),
    ("ddp_comm_hook", None),
    ("ddp_comm_wrapper", None),
    ("model_averaging_period", None),
    ("process_group_backend", None),
    ("timeout", None),
]


def test_signature_is_the_seeds_then_keyword_only_extras_then_kwargs():
    parameters = list(inspect.signature(DDPStrategy.__init__).parameters.values())[1:]
    positional = [(p.name, p.default) for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == SEED_PARAMETERS
    keyword_only = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    assert keyword_only == {"accelerator": None, "start_method": "popen", "precision": None}
    assert parameters[-1].kind is inspect.Parameter.VAR_KEYWORD


def test_positional_construction_in_seed_order_stores_every_argument():
    devices = [torch.device("cpu"), torch.device("cpu")]
    environment, io, plugin = LocalEnvironment(), TorchCheckpointIO(), DoublePrecision()
    state = object()
    strategy = DDPStrategy(
        devices,
        environment,
        io,
        plugin,
        state,
        default_hooks.allreduce_hook,
        default_hooks.fp16_compress_wrapper,
        None,
        "gloo",
        timedelta(minutes=7),
    )
    assert strategy.parallel_devices is devices
    assert strategy.cluster_environment is environment
    assert strategy.checkpoint_io is io
    assert strategy.precision is plugin
    assert strategy._ddp_comm_state is state
    assert strategy._ddp_comm_hook is default_hooks.allreduce_hook
    assert strategy._ddp_comm_wrapper is default_hooks.fp16_compress_wrapper
    assert strategy.process_group_backend == "gloo"
    assert strategy._timeout == timedelta(minutes=7)


def test_seed_defaults_passed_explicitly_are_accepted_and_none_timeout_is_the_backends_default():
    strategy = DDPStrategy(**dict(SEED_PARAMETERS))
    # resolved when the group forms: DEFAULT_TIMEOUT on gloo (resume.py checks it), torch's otherwise
    assert strategy._timeout is None
    assert timedelta(minutes=5) == DEFAULT_TIMEOUT
    assert strategy._process_group_backend is None
    assert strategy._ddp_kwargs == {}


def test_extras_after_the_seeds_are_keyword_only():
    with pytest.raises(TypeError):
        DDPStrategy(None, None, None, None, None, None, None, None, None, None, "fork")  # type: ignore[misc]


def test_precision_is_lightnings_alias_for_precision_plugin():
    plugin = DoublePrecision()
    assert DDPStrategy(precision=plugin).precision is plugin
    with pytest.raises(ValueError, match="same argument under two names"):
        DDPStrategy(precision_plugin=DoublePrecision(), precision=DoublePrecision())


def test_unknown_keyword_is_refused_naming_what_ddp_accepts():
    with pytest.raises(
        TypeError, match=r"unknown argument\(s\) find_unused_params\b.*find_unused_parameters"
    ):
        DDPStrategy(find_unused_params=True)


class ClippingDDP(DDPStrategy):
    def __init__(self, max_grad_norm: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.max_grad_norm = max_grad_norm


def test_a_subclass_takes_its_own_arguments_and_the_unknown_argument_error_names_it():
    strategy = ClippingDDP(max_grad_norm=0.5, start_method="spawn", find_unused_parameters=True)
    assert strategy.max_grad_norm == 0.5 and strategy._ddp_kwargs == {"find_unused_parameters": True}
    assert repr(strategy).startswith("ClippingDDP(")
    with pytest.raises(
        TypeError, match=r"^ClippingDDP got unknown argument\(s\) max_grad_nrom\. .*ClippingDDP's own"
    ):
        ClippingDDP(max_grad_nrom=0.5)


@pytest.mark.parametrize(
    ("name", "start_method", "ddp_kwargs"),
    [
        ("ddp", "popen", {}),
        ("ddp_spawn", "spawn", {}),
        ("ddp_fork", "fork", {}),
        ("ddp_notebook", "fork", {}),
        ("ddp_find_unused_parameters_true", "popen", {"find_unused_parameters": True}),
    ],
)
def test_registered_variants_build_with_their_init_params(name, start_method, ddp_kwargs):
    strategy = STRATEGY_REGISTRY.build(name)
    assert type(strategy) is DDPStrategy
    assert strategy._launcher.start_method == start_method
    assert strategy._ddp_kwargs == ddp_kwargs


def test_configure_ddp_before_the_process_group_says_when_to_call_it():
    with pytest.raises(RuntimeError, match=r"configure_ddp\(\) needs the process group"):
        DDPStrategy().configure_ddp()


def test_seed_snippet_kwargs_reach_the_ddp_module_and_positional_seed_order_works():
    # 2 processes (gloo) twice: the seed's DDP snippet (find_unused_parameters=False,
    # gradient_as_bucket_view=True, timeout=30 min), then the strategy built by position
    # with a comm hook + wrapper and a 7 min timeout; each checks the DDP module's attributes
    # and the process group's timeout on every rank
    result = run(sys.executable, str(SCRIPTS / "seed_snippet.py"))
    assert "run ok 0:30:00 None" in result.stdout, result.stdout
    assert "run ok 0:07:00 fp16_compress_wrapper" in result.stdout, result.stdout
    assert "seed snippet ok" in result.stdout, result.stdout
