"""Rank 1 fails after the process group is formed while rank 0 waits in a barrier.

Usage: python fail.py raise|kill MARKER   (MARKER only tags the processes for the test)
"""

import os
import signal
import sys

from fabric_core import Fabric

fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
fabric.launch()
fabric.barrier()
if fabric.global_rank == 1:
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("rank 1 fails on purpose")
fabric.barrier()  # rank 0 would wait here forever without the launcher stopping it
