"""Prefect tasks of the colorize DAG: one per stage, named as the stage, each a thin
wrapper over the stage's plain function in stages/.

Tasks take the job folder, the shard number and the resolved config as JSON, never images,
so Prefect's cache keys and logs stay small. A shard task's Prefect cache key is its
inputs and config (`shard_cache`, built on stages.registry.stage_key), known as soon as the
shard's upstream stages have finished; the flow submits it with `refresh_cache=True` unless
the stats file says this (stage, shard) is already done for those inputs, so the first run
stores the result under the key, a re-run of a finished job shows `Cached`, and a deleted
or stale output is always recomputed. The stats files themselves are the resume mechanism.

A task that skipped pages ends `Completed` with a message naming how many and which, and
logs one warning per page (the run's log in the UI); ingest's own log names its bad pages.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.states import Completed, State

from chromaflow.conf import Config
from chromaflow.stages import export, ingest, instances, lines, palette_memory, references, retrieve
from chromaflow.stages.pool import StagePool
from chromaflow.stages.registry import stage_key
from chromaflow.stages.runner import cached_stats
from chromaflow.storage.job import JobDir


def shard_cache(stage: str) -> CacheKeyFnPolicy:
    """Prefect cache key for (stage, shard): the job folder, the shard, and the hashes of
    the inputs and config keys its output depends on (none while an input is unfinished)."""

    def key_fn(context: Any, parameters: dict[str, Any]) -> str | None:
        job = JobDir.open(parameters["job_root"])
        shard = parameters["shard"]
        input_sha, config_sha = stage_key(job, stage, shard, Config.model_validate(parameters["config_json"]))
        if input_sha is None:
            return None
        raw = f"{job.root.resolve()}|{stage}|{shard}|{input_sha}|{config_sha}"
        return hashlib.sha256(raw.encode()).hexdigest()

    return CacheKeyFnPolicy(cache_key_fn=key_fn)


def _shard_task(stage: str, **options):
    return task(name=stage, cache_policy=shard_cache(stage), persist_result=True,
                task_run_name=stage + "-{shard:06d}", **options)


def skipped_pages_state(result: dict, failed: list[dict], what: str, warn: bool = True) -> dict | State:
    """The task's return value: the result itself, or `Completed` with a message when pages
    were skipped (one warning per page in the run's log unless the stage logged them)."""
    if not failed:
        return result
    if warn:
        logger = get_run_logger()
        for page in failed:
            logger.warning("%s: %s skipped: %s", what, page.get("name") or page.get("key"), page["error"])
    names = ", ".join(str(p.get("name") or p.get("key")) for p in failed[:5]) + (", ..." if len(failed) > 5 else "")
    return Completed(message=f"{len(failed)} page(s) skipped: {names}", data=result)


def _shard_result(stats: dict) -> dict | State:
    fresh = stats["status"] != "cached"  # pages a reused shard skipped were reported when it ran
    return skipped_pages_state(stats, stats.get("failed", []), f"{stats['stage']} {stats['shard']:06d}", warn=fresh)


# --- job-level stages ---------------------------------------------------------------

@task(name="ingest", task_run_name="ingest")
def ingest_task(job_root: str, source: str, config_json: dict) -> dict | State:
    summary = asdict(ingest.run(JobDir.open(job_root), source, Config.model_validate(config_json)))
    return skipped_pages_state(summary, summary["failed"], "ingest", warn=False)  # ingest logs its bad pages


@task(name="references", task_run_name="references")
def references_task(job_root: str, refs: str, config_json: dict) -> str:
    return references.run(JobDir.open(job_root), refs, Config.model_validate(config_json))


@task(name="palette_memory", task_run_name="palette_memory")
def palette_memory_task(job_root: str, config_json: dict) -> str | None:
    return palette_memory.run(JobDir.open(job_root), Config.model_validate(config_json))


@task(name="export", task_run_name="export")
def export_task(job_root: str, failures: list[str], force: bool = True) -> dict:
    return export.run(JobDir.open(job_root), failures, force)


# --- shard stages ---------------------------------------------------------------------

@_shard_task("lines")
def lines_task(job_root: str, shard: int, config_json: dict) -> dict | State:
    return _shard_result(lines.run(JobDir.open(job_root), shard, Config.model_validate(config_json)).to_dict())


@_shard_task("instances")
def instances_task(job_root: str, shard: int, config_json: dict) -> dict | State:
    return _shard_result(instances.run(JobDir.open(job_root), shard, Config.model_validate(config_json)).to_dict())


@_shard_task("retrieve")
def retrieve_task(job_root: str, shard: int, config_json: dict) -> dict | State:
    return _shard_result(retrieve.run(JobDir.open(job_root), shard, Config.model_validate(config_json)).to_dict())


# The pooled stages run on the Ray actor pool; Prefect retries stay off because the pool
# already retries a shard on another actor (ray.max_shard_attempts). No pool: the flow
# found every pooled shard already done for these inputs and config.
@_shard_task("colorize", retries=0)
def colorize_task(job_root: str, shard: int, config_json: dict, pool: StagePool | None) -> dict | State:
    job = JobDir.open(job_root)
    return _shard_result(pool.run("colorize", job, shard) if pool else cached_stats(job, "colorize", shard).to_dict())


@_shard_task("upscale", retries=0)
def upscale_task(job_root: str, shard: int, config_json: dict, pool: StagePool | None) -> dict | State:
    job = JobDir.open(job_root)
    return _shard_result(pool.run("upscale", job, shard) if pool else cached_stats(job, "upscale", shard).to_dict())
