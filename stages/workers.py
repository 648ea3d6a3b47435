"""What lives inside one Ray actor of the stage pool (stages/pool.py): the models of the
pooled stages, built once, and the dispatch from a stage name to its module's `run`.

Each pooled stage module may define `load(config) -> dict` (what to build once per actor,
passed to its `run` as keyword arguments); stages/registry.py marks which stages are pooled.
"""

from __future__ import annotations

import cv2

from chromaflow.conf import Config
from chromaflow.storage.job import JobDir

from . import colorize, upscale
from .runner import ShardStats

# The stages registry.py marks on_pool (tests/test_architecture.py checks they agree).
POOLED_MODULES = {"colorize": colorize, "upscale": upscale}


class PooledStages:
    """The runner factory of the stage pool: `PooledStages(config)` inside each actor."""

    def __init__(self, config: Config):
        # One actor per requested CPU: keep OpenCV from oversubscribing the cores.
        cv2.setNumThreads(max(1, int(config.ray.num_cpus_per_actor)))
        self.config = config
        # Built here, once per actor: this is where learned backends load their weights
        # (a failure here is an actor start-up failure: the pool stops retrying at once).
        self.resources = {name: module.load(self.config) if hasattr(module, "load") else {}
                          for name, module in POOLED_MODULES.items()}

    def run(self, stage: str, job: JobDir, shard: int) -> ShardStats:
        if stage not in POOLED_MODULES:
            raise ValueError(f"stage {stage!r} does not run on the actor pool")
        return POOLED_MODULES[stage].run(job, shard, self.config, **self.resources[stage])
