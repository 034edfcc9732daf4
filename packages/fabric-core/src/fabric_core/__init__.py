"""fabric-core: scale a plain PyTorch training loop by changing one argument.

Example::

    from fabric_core import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, precision="bf16-mixed")
    model, optimizer = fabric.setup(model, optimizer)
    for batch in fabric.setup_dataloaders(loader):
        loss = model(batch).mean()
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()

Names are imported on first access, so ``import fabric_core`` costs almost nothing and
the ``fabric`` command line starts without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric_core.__about__ import __version__
from fabric_core.lazy import lazy_exports

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric
    from fabric_core.hookspecs import PLUGIN_API_VERSION, hookimpl
    from fabric_core.utilities.seed import seed_everything
    from fabric_core.wrappers import is_wrapped

__all__ = ["PLUGIN_API_VERSION", "Fabric", "__version__", "hookimpl", "is_wrapped", "seed_everything"]

_EXPORTS = {
    "Fabric": "fabric_core.fabric",
    "seed_everything": "fabric_core.utilities.seed",
    "hookimpl": "fabric_core.hookspecs",
    "PLUGIN_API_VERSION": "fabric_core.hookspecs",
    "is_wrapped": "fabric_core.wrappers",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
