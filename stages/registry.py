"""The stage table: every stage of the colorize DAG, written once.

    stage           kind   reads (shard sets)          job-level inputs           config keys
    ingest          job    the source                  -                          job, ingest
    references      job    the refs folder             -                          retrieval, lines, colorize.work_size
    palette_memory  job    references                  -                          colorize.palette_*
    lines           shard  ingest                      -                          lines, colorize.work_size
    instances       shard  lines, ingest               -                          instances
    retrieve        shard  lines, ingest, instances    references                 retrieval, instances
    colorize        shard  ingest, lines, retrieve,    references, palette_memory colorize
                           instances
    upscale         shard  ingest, colorize            -                          upscale
    export          job    upscale (ingest for gaps)   -                          export

A shard stage's output is the shard set `OUT/<stage>/`; `stage_key` is the one definition
of what a (stage, shard) result depends on, used by the runner (skip what is done), the
Prefect tasks (cache keys) and the flows (is model work pending, what a rerun redoes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from chromaflow.conf import Config
from chromaflow.retrieval.store_format import StoreError, store_fingerprint
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import read_stats, sha256_file


@dataclass(frozen=True)
class ShardStage:
    name: str  # also its shard folder, its Prefect task and its module in stages/
    inputs: tuple[str, ...]  # shard sets it reads; the first one drives the sample order
    config_keys: tuple[str, ...]  # config sections or dotted keys its output depends on
    job_inputs: tuple[str, ...] = ()  # job-level files its output depends on
    on_pool: bool = False  # runs on the Ray actor pool (a model loaded once per actor)


INGEST = "ingest"
INGEST_CONFIG = ("job", "ingest")

SHARD_STAGES: dict[str, ShardStage] = {s.name: s for s in (
    ShardStage("lines", (INGEST,), ("lines", "colorize.work_size")),  # lines are extracted at the colorize size
    ShardStage("instances", ("lines", INGEST), ("instances",)),
    ShardStage("retrieve", ("lines", INGEST, "instances"), ("retrieval", "instances"), ("references",)),
    ShardStage("colorize", (INGEST, "lines", "retrieve", "instances"), ("colorize",), ("references", "palette_memory"),
               on_pool=True),
    ShardStage("upscale", (INGEST, "colorize"), ("upscale",), on_pool=True),
)}
SHARD_SETS: tuple[str, ...] = (INGEST, *SHARD_STAGES)  # every shard folder, in DAG order
FINAL = "upscale"  # the shard set export reads


def stage_config_sha(config: Config, stage: str) -> str:
    keys = INGEST_CONFIG if stage == INGEST else SHARD_STAGES[stage].config_keys
    return config.section_hash(*keys)


def job_input_fingerprint(job: JobDir, name: str, config: Config) -> str:
    """Fingerprint of a job-level input: the reference store (store.json's fingerprint,
    no index opened) or the palette memory file (when enabled and built)."""
    if name == "references":
        try:
            return store_fingerprint(job.references)
        except StoreError:
            return "none"
    if name == "palette_memory":
        if config.colorize.palette_memory and job.palette_memory.exists():
            return sha256_file(job.palette_memory)
        return "off"
    raise ValueError(f"unknown job input {name!r}")


def stage_key(job: JobDir, stage: str, shard: int, config: Config) -> tuple[str | None, str]:
    """(input_sha, config_sha) of a shard stage. input_sha hashes the input shards'
    output_sha256 and the job-level inputs; it is None while an input shard is unfinished."""
    spec = SHARD_STAGES[stage]
    parts = [f"{name}:{job_input_fingerprint(job, name, config)}" for name in spec.job_inputs]
    for upstream in spec.inputs:
        stats = read_stats(job, upstream, shard)
        if stats is None:
            return None, stage_config_sha(config, stage)
        parts.append(f"{upstream}:{stats['output_sha256']}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest(), stage_config_sha(config, stage)
