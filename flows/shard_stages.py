"""The shard stages of one job, chained per shard, so they overlap.

    shard 0: lines ─▶ retrieve ─▶ colorize ─▶ upscale
    shard 1:   lines ─▶ retrieve ─▶ colorize ─▶ upscale
    shard 2:     lines ─▶ ...

A (stage, shard) is submitted as soon as the same shard's previous stage has finished, so
colorize of shard 0 runs on the actor pool (the GPU in production) while lines and
retrieval of shard 1 run in the flow's threads. The loop runs in the flow's thread and
waits with `as_completed`; what is ready next goes downstream first (finish shards rather
than start new ones), within two budgets:

- lines/retrieve tasks in flight ≤ `prefect.max_parallel_tasks` (CPU work in this process);
- pooled tasks in flight ≤ 2 × `ray.num_actors`: each actor has its next shard waiting, so
  it never idles while the flow submits the next task (the waiting task only blocks a thread
  in `StagePool.run`).

`prefect.overlap_stages: false` keeps the old stage-by-stage barriers (every shard finishes
a stage before any shard starts the next), for comparison (bench/bench_pipeline.py).

The pool is started here, from the flow's thread, when the first pooled (stage, shard) turns
out to need work and no pool was started before ingest (Ray ties its daemons to the thread
that starts it; see run_pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from chromaflow.conf import Config
from chromaflow.flows.summary import JobSummary
from chromaflow.stages.pool import StagePool
from chromaflow.stages.registry import SHARD_STAGES
from chromaflow.stages.runner import is_done
from chromaflow.stages.workers import PooledStages
from chromaflow.storage.atomic import DiskFull
from chromaflow.storage.job import JobDir
from chromaflow.tasks.stages import colorize_task, instances_task, lines_task, retrieve_task, upscale_task

SHARD_TASKS = {"lines": lines_task, "instances": instances_task, "retrieve": retrieve_task, "colorize": colorize_task,
               "upscale": upscale_task}
STAGES = list(SHARD_STAGES)  # DAG order


def thread_pool_size(config: Config) -> int:
    """Threads of the flow's task runner: the CPU stages plus one waiting thread per pooled task."""
    return config.prefect.max_parallel_tasks + 2 * config.ray.num_actors


@dataclass
class _Submitted:
    stage: str
    shard: int
    reused: bool  # already done for its inputs and config when submitted


@dataclass
class ShardStages:
    job: JobDir
    config: Config
    runner: ThreadPoolTaskRunner
    summary: JobSummary
    pool: StagePool | None
    retries: dict
    ready: set[tuple[int, int]] = field(default_factory=set)  # (stage index, shard) whose input is done
    running: dict[PrefectFuture, _Submitted] = field(default_factory=dict)

    def run(self, shards: list[int]) -> StagePool | None:
        """Every shard stage over `shards`; returns the pool (started here if needed)."""
        total = max(1, len(shards) * len(STAGES))
        progress = create_progress_artifact(0.0, key=self.summary.artifact_key("progress"),
                                            description=f"{self.job.name}: shard stages done")
        self.ready = {(0, shard) for shard in shards}
        finished = 0
        while self.ready or self.running:
            self._submit_what_fits()
            future = next(as_completed(list(self.running)))
            self._finished(future, self.running.pop(future))
            finished += 1
            update_progress_artifact(progress, 100.0 * finished / total)
        update_progress_artifact(progress, 100.0)
        return self.pool

    def _submit_what_fits(self) -> None:
        in_flight = {True: 0, False: 0}  # pooled?
        for item in self.running.values():
            in_flight[SHARD_STAGES[item.stage].on_pool] += 1
        budget = {True: 2 * self.config.ray.num_actors, False: self.config.prefect.max_parallel_tasks}
        candidates = sorted(self.ready, key=lambda item: (-item[0], item[1]))  # downstream first
        if not self.config.prefect.overlap_stages:
            current = min(i for i, _ in self.ready | {(STAGES.index(r.stage), 0) for r in self.running.values()})
            candidates = [c for c in candidates if c[0] == current]
        for index, shard in candidates:
            pooled = SHARD_STAGES[STAGES[index]].on_pool
            if in_flight[pooled] < budget[pooled]:
                self.ready.discard((index, shard))
                self._submit(STAGES[index], shard)
                in_flight[pooled] += 1

    def _submit(self, stage: str, shard: int) -> None:
        spec = SHARD_STAGES[stage]
        reused = is_done(self.job, stage, shard, self.config)
        if spec.on_pool and not reused and self.pool is None:
            self.pool = StagePool(self.config, PooledStages)  # from the flow's thread, on purpose
        # refresh_cache: Prefect must run (and re-store) what is not done for its inputs.
        options = {"refresh_cache": not reused, **({} if spec.on_pool else self.retries)}
        parameters = {"job_root": str(self.job.root), "shard": shard,
                      "config_json": self.config.model_dump(mode="json")}
        if spec.on_pool:
            parameters["pool"] = self.pool
        future = self.runner.submit(SHARD_TASKS[stage].with_options(**options), parameters)
        self.running[future] = _Submitted(stage, shard, reused)

    def _finished(self, future: PrefectFuture, item: _Submitted) -> None:
        future.wait()  # done already; this makes `state` the final one (not the API's view)
        if future.state.is_completed():
            self.summary.add_shard_result(future.result(), reused=item.reused)
            index = STAGES.index(item.stage)
            if index + 1 < len(STAGES):
                self.ready.add((index + 1, item.shard))
        else:
            failure = future.result(raise_on_failure=False)
            if isinstance(failure, DiskFull):
                raise failure  # no space: the job stops here, what is written stays
            self.summary.add_shard_failure(item.stage, item.shard, state_error(future))


def state_error(future: PrefectFuture) -> str:
    """One line for a failed task: the task's own exception, or its state's message."""
    try:
        future.result()
    except Exception as exc:  # the task's own exception, re-raised by Prefect
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}"
    return str(future.state.message or future.state.name)
