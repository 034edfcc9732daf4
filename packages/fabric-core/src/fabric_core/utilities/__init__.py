"""Small helpers shared by fabric-core and the plugins.

The names Lightning Fabric's ``lightning.fabric.utilities`` offers are importable from
here, each loaded on first access, as are fabric's own `CheckpointManager` and
`Preemption` and `RandomState`.
"""

from fabric_core.lazy import lazy_exports

__all__ = [
    "CheckpointManager",
    "DistributedSamplerWrapper",
    "MemoryEstimate",
    "Preemption",
    "RandomState",
    "Throughput",
    "ThroughputMonitor",
    "convert_to_tensors",
    "estimate_memory",
    "is_wrapped",
    "measure_flops",
    "move_data_to_device",
    "rank_zero_debug",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "reset_seed",
    "seed_everything",
    "warn_once",
    "worker_init_function",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CheckpointManager": "fabric_core.utilities.checkpoint_manager",
        "DistributedSamplerWrapper": "fabric_core.utilities.data",
        "MemoryEstimate": "fabric_core.utilities.memory_layout",
        "Preemption": "fabric_core.utilities.preemption",
        "RandomState": "fabric_core.utilities.rng",
        "Throughput": "fabric_core.utilities.throughput",
        "ThroughputMonitor": "fabric_core.utilities.throughput",
        "convert_to_tensors": "fabric_core.utilities.apply_func",
        "estimate_memory": "fabric_core.utilities.memory",
        "is_wrapped": "fabric_core.wrappers",
        "measure_flops": "fabric_core.utilities.throughput",
        "move_data_to_device": "fabric_core.utilities.apply_func",
        "rank_zero_debug": "fabric_core.utilities.rank_zero",
        "rank_zero_info": "fabric_core.utilities.rank_zero",
        "rank_zero_only": "fabric_core.utilities.rank_zero",
        "rank_zero_warn": "fabric_core.utilities.rank_zero",
        "reset_seed": "fabric_core.utilities.seed",
        "seed_everything": "fabric_core.utilities.seed",
        "warn_once": "fabric_core.utilities.rank_zero",
        "worker_init_function": "fabric_core.utilities.seed",
    },
)
