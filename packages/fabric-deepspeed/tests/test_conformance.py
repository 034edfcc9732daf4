"""fabric-deepspeed keeps the Strategy contract: fabric-core's conformance kit, ZeRO stages 1-3 on 2 CPU processes.

The three stages share one launch (``launch_group``): each worker runs one stage's checks
after the other, so the processes, torch and DeepSpeed are started once; each class still
reports its own tests. DeepSpeed runs on its CPU accelerator (``DS_ACCELERATOR=cpu``, set
by the nox session) over gloo; the kit's SGD needs none of DeepSpeed's compiled ops.
"""

from __future__ import annotations

import logging

from fabric_core.testing import StrategyConformanceSuite
from fabric_deepspeed._runtime import import_deepspeed

# Imported before the workers are forked, so they inherit deepspeed instead of each importing it.
import_deepspeed("cpu", logging.WARNING)


class TestDeepSpeedStage1Conformance(StrategyConformanceSuite):
    """ZeRO stage 1: optimizer state partitioned; ``no_backward_sync`` skips the gradient reduction."""

    strategy = "deepspeed_stage_1"
    tolerance = 1e-5
    start_method = "fork"  # the workers inherit the imported torch: seconds faster than spawn
    launch_group = "fabric-deepspeed"


class TestDeepSpeedStage2Conformance(TestDeepSpeedStage1Conformance):
    """ZeRO stage 2: gradients reduce-scattered in every backward, so ``no_backward_sync`` cannot skip it (and warns)."""

    strategy = "deepspeed_stage_2"
    supports_no_backward_sync = False


class TestDeepSpeedStage3Conformance(TestDeepSpeedStage1Conformance):
    """ZeRO stage 3: parameters partitioned too; like stage 2, every backward reduce-scatters."""

    strategy = "deepspeed_stage_3"
    supports_no_backward_sync = False
