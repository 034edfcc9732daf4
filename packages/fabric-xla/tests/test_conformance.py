"""fabric-xla keeps the Strategy contract: fabric-core's conformance kit on XLA:CPU, with no skips.

Both strategies run in one process: ``single_xla`` in this one (its runtime is the one the
conftest started), ``xla_spmd`` in a fresh interpreter with 2 virtual devices, because SPMD
mode and the device count are fixed before a process first uses XLA. ``xla`` and
``xla_fsdp`` need several processes, whose XLA collectives hang on XLA:CPU (upstream), so
the kit does not run them here.
"""

from __future__ import annotations

import dataclasses
import subprocess
from typing import Any, ClassVar

from xla_helpers import run_script

from fabric_core import Fabric
from fabric_core.testing import (
    CheckResult,
    ConformanceReport,
    StrategyConformance,
    StrategyConformanceSuite,
    StrategySpec,
)

SPMD_DEVICES = 2


class TestSingleXLAConformance(StrategyConformanceSuite):
    """``single_xla`` on the XLA:CPU device of this process."""

    strategy = "single_xla"
    world_size = 1
    accelerator = "tpu"


@dataclasses.dataclass(frozen=True)
class EveryDeviceSpec(StrategySpec):
    """A spec whose ``Fabric`` takes every device of the host (``devices=-1``) for one process.

    The kit asks for ``devices=world_size``, one device per process; ``xla_spmd`` runs one
    process (``world_size`` 1) over all the host's devices.
    """

    def build_fabric(self) -> Fabric:
        """A ``Fabric`` over every XLA device, running a new strategy instance."""
        return Fabric(
            accelerator=self.accelerator, strategy=self.build_strategy(), devices=-1, precision=self.precision
        )


class TestXLASPMDConformance(StrategyConformanceSuite):
    """``xla_spmd`` over 2 virtual XLA:CPU devices (parameters and batches sharded), in a subprocess."""

    strategy = "xla_spmd"
    world_size = 1
    accelerator = "tpu"
    _outcome: ClassVar[ConformanceReport | Exception | None] = None

    @classmethod
    def conformance(cls) -> StrategyConformance:
        """The kit's run with ``Fabric(devices=-1)``; run it in a process with SPMD still off."""
        conformance = super().conformance()
        conformance.spec = EveryDeviceSpec(**vars(conformance.spec))
        return conformance

    @classmethod
    def conformance_report(cls) -> ConformanceReport:
        """Run ``scripts/spmd_conformance.py`` once, with ``CPU_NUM_DEVICES=2``, and read its report.

        A subprocess that fails or hangs is not run again: every check then fails with its error.
        """
        if cls._outcome is None:
            env = {"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": str(SPMD_DEVICES)}
            try:
                cls._outcome = report_from_json(run_script("spmd_conformance.py", env=env, timeout=180))
            except (AssertionError, subprocess.TimeoutExpired) as error:
                cls._outcome = error
        if isinstance(cls._outcome, Exception):
            raise RuntimeError("the xla_spmd conformance subprocess did not report") from cls._outcome
        return cls._outcome


def report_as_json(report: ConformanceReport) -> dict[str, Any]:
    """The report as JSON-ready data (what the subprocess prints)."""
    return {
        "target": report.target,
        "launch_error": report.launch_error,
        "seconds": report.seconds,
        "results": [dataclasses.asdict(result) for result in report.results],
    }


def report_from_json(data: dict[str, Any]) -> ConformanceReport:
    """The report that :func:`report_as_json` gave."""
    results = tuple(
        CheckResult(item["name"], item["status"], tuple(item["problems"]), item["seconds"])
        for item in data["results"]
    )
    return ConformanceReport(data["target"], results, data["launch_error"], data["seconds"])
