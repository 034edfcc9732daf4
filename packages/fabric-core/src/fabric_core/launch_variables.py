"""The environment variables through which ``fabric run`` passes its options to ``Fabric(...)``.

Kept free of torch imports: the command line reads it before deciding to import torch.
"""

from __future__ import annotations

from typing import Final

LAUNCHER_VARIABLES: Final = {
    "accelerator": "FABRIC_ACCELERATOR",
    "strategy": "FABRIC_STRATEGY",
    "devices": "FABRIC_DEVICES",
    "num_nodes": "FABRIC_NUM_NODES",
    "precision": "FABRIC_PRECISION",
}
"""``Fabric`` argument → the variable ``fabric run`` sets for it in every worker."""
