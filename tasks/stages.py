"""Prefect tasks of the colorize DAG: thin wrappers over the plain stage functions.

Tasks take the job folder, the shard number and the resolved config as JSON, never images,
so Prefect's cache keys and logs stay small. Stage tasks are cached in Prefect only when
the shard's stats file says it finished from the same inputs and config (see
`shard_cache_key`); the stats files themselves are the real resume mechanism.
"""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy

from chromaflow.config import Config
from chromaflow.ray_pool import StagePool
from chromaflow.retrieval.stage import open_store, run_retrieval_shard
from chromaflow.models.stages import color_stage_inputs, run_lines_shard, stage_config_hash
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import cached_result, input_fingerprint, is_done, read_stats

def shard_cache_key(stage: str):
    """Prefect cache key for (stage, shard): defined only when the shard is already done
    for the current inputs and config, so a deleted or stale output is never served from
    Prefect's cache."""

    def key_fn(context: Any, parameters: dict[str, Any]) -> str | None:
        job = JobDir.open(parameters["job_root"])
        shard = parameters["shard"]
        config = Config.model_validate(parameters["config_json"])
        extra = ""
        if stage == "retrieval":
            extra = open_store(job).fingerprint
        elif stage == "color":
            extra = color_stage_inputs(job, config, open_store(job).fingerprint)
        input_sha = input_fingerprint(job, stage, shard, extra)
        config_sha = stage_config_hash(config, stage)
        if not is_done(job, stage, shard, input_sha, config_sha):
            return None
        stats = read_stats(job, stage, shard) or {}
        raw = f"{job.root.resolve()}|{stage}|{shard}|{input_sha}|{config_sha}|{stats.get('output_sha256')}"
        return hashlib.sha256(raw.encode()).hexdigest()

    return CacheKeyFnPolicy(cache_key_fn=key_fn)


@task(name="extract-lines", cache_policy=shard_cache_key("lines"), persist_result=True,
      task_run_name="extract-lines-{shard}")
def extract_lines_task(job_root: str, shard: int, config_json: dict) -> dict:
    return run_lines_shard(JobDir.open(job_root), shard, Config.model_validate(config_json)).to_dict()


@task(name="retrieve-references", cache_policy=shard_cache_key("retrieval"), persist_result=True,
      task_run_name="retrieve-references-{shard}")
def retrieve_references_task(job_root: str, shard: int, config_json: dict) -> dict:
    return run_retrieval_shard(JobDir.open(job_root), shard, Config.model_validate(config_json)).to_dict()


# The model stages run on the Ray actor pool; Prefect retries stay off because the pool
# already retries a shard on another actor (ray.max_shard_attempts).
@task(name="colorize", cache_policy=shard_cache_key("color"), persist_result=True, retries=0,
      task_run_name="colorize-{shard}")
def colorize_task(job_root: str, shard: int, config_json: dict, pool: StagePool | None) -> dict:
    # No pool: the flow found every model shard already done for these inputs and config.
    job = JobDir.open(job_root)
    return pool.run("color", job, shard) if pool else cached_result(job, "color", shard).to_dict()


@task(name="upscale", cache_policy=shard_cache_key("final"), persist_result=True, retries=0,
      task_run_name="upscale-{shard}")
def upscale_task(job_root: str, shard: int, config_json: dict, pool: StagePool | None) -> dict:
    job = JobDir.open(job_root)
    return pool.run("final", job, shard) if pool else cached_result(job, "final", shard).to_dict()
