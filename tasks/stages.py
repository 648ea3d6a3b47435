"""Prefect tasks of the colorize DAG: one per stage, named as the stage, each a thin
wrapper over the stage's plain function in stages/.

Tasks take the job folder, the shard number and the resolved config as JSON, never images,
so Prefect's cache keys and logs stay small. Shard tasks are cached in Prefect only when
the shard's stats file says it finished from the same inputs and config (`shard_cache`,
built on stages.registry.stage_key); the stats files themselves are the resume mechanism.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy

from chromaflow.conf import Config
from chromaflow.stages import export, ingest, lines, palette_memory, references, retrieve
from chromaflow.stages.pool import StagePool
from chromaflow.stages.registry import stage_key
from chromaflow.stages.runner import cached_stats, is_done
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import read_stats


def shard_cache(stage: str) -> CacheKeyFnPolicy:
    """Prefect cache key for (stage, shard): defined only when the shard is already done
    for the current inputs and config, so a deleted or stale output is never served from
    Prefect's cache."""

    def key_fn(context: Any, parameters: dict[str, Any]) -> str | None:
        job = JobDir.open(parameters["job_root"])
        shard = parameters["shard"]
        config = Config.model_validate(parameters["config_json"])
        if not is_done(job, stage, shard, config):
            return None
        input_sha, config_sha = stage_key(job, stage, shard, config)
        output_sha = (read_stats(job, stage, shard) or {}).get("output_sha256")
        raw = f"{job.root.resolve()}|{stage}|{shard}|{input_sha}|{config_sha}|{output_sha}"
        return hashlib.sha256(raw.encode()).hexdigest()

    return CacheKeyFnPolicy(cache_key_fn=key_fn)


def _shard_task(stage: str, **options):
    return task(name=stage, cache_policy=shard_cache(stage), persist_result=True,
                task_run_name=stage + "-{shard:06d}", **options)


# --- job-level stages ---------------------------------------------------------------

@task(name="ingest")
def ingest_task(job_root: str, source: str, config_json: dict) -> dict:
    return asdict(ingest.run(JobDir.open(job_root), source, Config.model_validate(config_json)))


@task(name="references")
def references_task(job_root: str, refs: str, config_json: dict) -> str:
    return references.run(JobDir.open(job_root), refs, Config.model_validate(config_json))


@task(name="palette_memory")
def palette_memory_task(job_root: str, config_json: dict) -> str | None:
    return palette_memory.run(JobDir.open(job_root), Config.model_validate(config_json))


@task(name="export")
def export_task(job_root: str, failures: list[str], force: bool = True) -> dict:
    return export.run(JobDir.open(job_root), failures, force)


# --- shard stages ---------------------------------------------------------------------

@_shard_task("lines")
def lines_task(job_root: str, shard: int, config_json: dict) -> dict:
    return lines.run(JobDir.open(job_root), shard, Config.model_validate(config_json)).to_dict()


@_shard_task("retrieve")
def retrieve_task(job_root: str, shard: int, config_json: dict) -> dict:
    return retrieve.run(JobDir.open(job_root), shard, Config.model_validate(config_json)).to_dict()


# The pooled stages run on the Ray actor pool; Prefect retries stay off because the pool
# already retries a shard on another actor (ray.max_shard_attempts). No pool: the flow
# found every pooled shard already done for these inputs and config.
@_shard_task("colorize", retries=0)
def colorize_task(job_root: str, shard: int, config_json: dict, pool: StagePool | None) -> dict:
    job = JobDir.open(job_root)
    return pool.run("colorize", job, shard) if pool else cached_stats(job, "colorize", shard).to_dict()


@_shard_task("upscale", retries=0)
def upscale_task(job_root: str, shard: int, config_json: dict, pool: StagePool | None) -> dict:
    job = JobDir.open(job_root)
    return pool.run("upscale", job, shard) if pool else cached_stats(job, "upscale", shard).to_dict()
