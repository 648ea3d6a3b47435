"""A Ray actor pool that runs shard stages: generic, it knows no stage names.

Each actor builds a runner once (`factory(config)`, e.g. stages/workers.py: the models of
the pooled stages) and then processes whole shards with `runner.run(stage, job, shard)`,
so weights are loaded once per actor, not per page or per task (prefect-ray's
RayTaskRunner would make every Prefect task a Ray *task* and reload the model each time).
Prefect tasks in the flow process call `StagePool.run(...)`, which blocks until a free
actor has finished the shard.

Faults: an actor that dies (segfault, OOM kill, os._exit) is replaced and the shard goes
back to the queue, so it runs again on another actor; an exception inside the shard is
retried the same way. After `ray.max_shard_attempts` attempts the shard is recorded as
failed (`.failed.json`) and `ShardFailed` is raised; the flow carries on with the others.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError, RayTaskError

from chromaflow.conf import Config
from chromaflow.storage.atomic import DiskFull
from chromaflow.storage.job import JobDir

from .runner import record_failure

log = logging.getLogger(__name__)


class ShardFailed(RuntimeError):
    """A shard failed on every attempt."""


# factory(config) -> an object with run(stage: str, job: JobDir, shard: int) -> ShardStats,
# built once inside each actor.
RunnerFactory = Callable[[Config], Any]


@ray.remote
class StageActor:
    def __init__(self, config_json: dict, factory: RunnerFactory):
        self.runner = factory(Config.model_validate(config_json))

    def run(self, stage: str, job_root: str, shard: int) -> dict:
        return self.runner.run(stage, JobDir.open(job_root), shard).to_dict()

    def pid(self) -> int:
        return os.getpid()


def ensure_ray(config: Config) -> bool:
    """Connect to Ray: ray.address, else RAY_ADDRESS, else a local cluster.
    Returns True when this call started Ray (so the caller should shut it down)."""
    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        need = config.ray.num_actors * config.ray.num_cpus_per_actor
        ray.init(num_cpus=max(int(need + 0.999), os.cpu_count() or 1), include_dashboard=False,
                 logging_level=logging.WARNING)
    return True


class StagePool:
    def __init__(self, config: Config, factory: RunnerFactory):
        self.config = config
        self.factory = factory
        self.started_ray = ensure_ray(config)
        self._config_json = config.model_dump(mode="json")
        self._free: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self.broken: str | None = None
        self.disk_full: DiskFull | None = None  # no space: every later shard stops at once
        self.actors = [self._new_actor() for _ in range(config.ray.num_actors)]
        for actor in self.actors:
            self._free.put(actor)

    def _new_actor(self):
        opts = {"num_cpus": self.config.ray.num_cpus_per_actor, "num_gpus": self.config.ray.num_gpus_per_actor}
        return StageActor.options(**opts).remote(self._config_json, self.factory)

    def _replace(self, dead) -> None:
        with self._lock:
            replacement = self._new_actor()
            self.actors = [replacement if a is dead else a for a in self.actors]
        self._free.put(replacement)

    def run(self, stage: str, job: JobDir, shard: int) -> dict:
        """Run one shard on a free actor, retrying on another after a crash or error."""
        max_attempts = self.config.ray.max_shard_attempts
        error = "no attempt made"
        for attempt in range(1, max_attempts + 1):
            if self.disk_full is not None:
                raise self.disk_full
            if self.broken:
                break
            actor = self._free.get()
            if self.disk_full is not None:  # it came while this shard waited for an actor
                self._free.put(actor)
                raise self.disk_full
            try:
                result = ray.get(actor.run.remote(stage, str(job.root), shard))
            except RayActorError as exc:
                if exc.actor_init_failed:
                    # The model could not even be built (bad weights path, missing plugin):
                    # every shard would fail the same way, so stop retrying everywhere.
                    self.broken = error = f"model failed to load: {_last_line(str(exc))}"
                    self._free.put(actor)
                    break
                error = f"worker crashed: {_first_line(str(exc))}"
                log.warning("%s shard %d attempt %d/%d: %s; retrying on another actor",
                            stage, shard, attempt, max_attempts, error)
                self._replace(actor)
            except RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                if isinstance(cause, DiskFull):  # another attempt (or shard) would fail the same way
                    self.disk_full = cause  # set before the actor is free again: no shard starts after it
                    self._free.put(actor)
                    raise cause from None
                self._free.put(actor)
                error = f"{type(cause).__name__}: {_last_line(str(cause))}"
                log.warning("%s shard %d attempt %d/%d failed: %s", stage, shard, attempt, max_attempts, error)
            else:
                self._free.put(actor)
                return result
            record_failure(job, stage, shard, error)
        if self.broken:
            error = self.broken
            record_failure(job, stage, shard, error)
        raise ShardFailed(f"{stage} shard {shard} failed {max_attempts if not self.broken else 'to start'}"
                          f"{' times' if not self.broken else ''}: {error}")

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started_ray:
            ray.shutdown()


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
