"""Running one shard stage over one shard (img2dataset style).

A (stage, shard) reads its input shard sets, processes the samples, writes one WebDataset
tar atomically and then its stats JSON. The stats file is written last: it is the only
"done" marker, so a run killed mid-shard leaves that shard unfinished and a resumed run
redoes exactly it. A sample that fails is left out of the output and listed in the stats
(status "partial"); an exception outside a sample marks the whole shard failed
(`.failed.json`, with an attempt counter). What a result depends on is
`registry.stage_key`; a shard whose stats match it and whose tar is intact is not redone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from chromaflow.conf import Config
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import (Sample, read_failure, read_shard, read_stats, sha256_file, write_failure,
                                       write_shard, write_stats)

from .registry import SHARD_STAGES, stage_key


@dataclass
class ShardStats:
    """What a (stage, shard) run reports back (JSON-friendly via to_dict)."""

    stage: str
    shard: int
    status: str  # ok | partial | failed | cached
    count: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


# A batch processor gets [(key, {input_stage: sample}), ...] and returns one output sample
# (without __key__) per item; it raises for a page it cannot handle.
BatchProcessor = Callable[[list[tuple[str, dict[str, Sample]]]], list[Sample]]


def output_intact(job: JobDir, stage: str, shard: int, stats: dict[str, Any]) -> bool:
    """The shard tar the stats describe is still there, with the recorded size."""
    out = job.shard_path(stage, shard)
    return out.exists() and out.stat().st_size == stats.get("output_bytes")


def is_done(job: JobDir, stage: str, shard: int, config: Config) -> bool:
    """Finished earlier from the same inputs and config, and the output is still there."""
    stats = read_stats(job, stage, shard)
    if stats is None:
        return False
    input_sha, config_sha = stage_key(job, stage, shard, config)
    return (input_sha is not None and stats.get("input_sha256") == input_sha
            and stats.get("config_sha256") == config_sha and output_intact(job, stage, shard, stats))


def cached_stats(job: JobDir, stage: str, shard: int) -> ShardStats:
    """The result of a (stage, shard) that an earlier run finished."""
    stats = read_stats(job, stage, shard)
    if stats is None:
        raise RuntimeError(f"{stage} shard {shard} has no finished result")
    return ShardStats(stage, shard, "cached", stats.get("count", 0), stats.get("failed", []))


def run_shard(job: JobDir, stage: str, shard: int, config: Config, process_batch: BatchProcessor,
              batch_size: int = 1) -> ShardStats:
    """Run a shard stage over one shard: read inputs, process the samples in batches,
    write output + stats. A batch that raises is retried page by page, so one bad page
    still only costs itself."""
    input_sha, config_sha = stage_key(job, stage, shard, config)
    if input_sha is None:
        raise RuntimeError(f"{stage} shard {shard}: an input shard is not finished")
    if is_done(job, stage, shard, config):
        return cached_stats(job, stage, shard)
    started = time.time()
    lead, *others = SHARD_STAGES[stage].inputs
    by_key = {name: {s["__key__"]: s for s in read_shard(job.shard_path(name, shard))} for name in others}
    items = []
    for sample in read_shard(job.shard_path(lead, shard)):
        key = sample["__key__"]
        if any(key not in by_key[name] for name in others):
            continue  # the page failed upstream; it is already reported there
        items.append((key, {lead: sample, **{name: by_key[name][key] for name in others}}))
    outputs: list[Sample] = []
    failed: list[dict[str, str]] = []
    step = max(1, batch_size)
    for start in range(0, len(items), step):
        batch = items[start:start + step]
        try:
            results = process_batch(batch)
        except Exception as exc:
            results = [exc] if len(batch) == 1 else [_try_one(process_batch, item) for item in batch]
        for (key, joined), out in zip(batch, results):
            if isinstance(out, Exception):  # one bad page must not sink the shard
                failed.append({"key": key, "name": sample_name(joined[lead]), "error": one_line(out)})
            else:
                outputs.append({"__key__": key, **out})
    return finish_shard(job, stage, shard, outputs, failed, input_sha, config_sha, started)


def _try_one(process_batch: BatchProcessor, item) -> Sample | Exception:
    try:
        return process_batch([item])[0]
    except Exception as exc:
        return exc


def finish_shard(job: JobDir, stage: str, shard: int, outputs: list[Sample], failed: list[dict[str, str]],
                 input_sha: str, config_sha: str, started: float) -> ShardStats:
    """Write the shard tar, then its stats (last: the done marker)."""
    out_path = job.shard_path(stage, shard)
    write_shard(out_path, outputs)
    previous = read_failure(job, stage, shard)
    seconds = time.time() - started
    write_stats(job, stage, shard, {
        "stage": stage,
        "shard": shard,
        "status": "partial" if failed else "ok",
        "count": len(outputs),
        "failed": failed,
        "input_sha256": input_sha,
        "config_sha256": config_sha,
        "output_sha256": sha256_file(out_path),
        "output_bytes": out_path.stat().st_size,
        "attempts": (previous or {}).get("attempts", 0) + 1,
        "seconds": round(seconds, 4),
        "started_at": started,
        "finished_at": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    })
    if previous is not None:
        job.failed_path(stage, shard).unlink(missing_ok=True)
    return ShardStats(stage, shard, "partial" if failed else "ok", len(outputs), failed, seconds=seconds)


def record_failure(job: JobDir, stage: str, shard: int, error: str) -> int:
    """Mark a (stage, shard) failed; returns the attempt count so far."""
    attempts = int((read_failure(job, stage, shard) or {}).get("attempts", 0)) + 1
    write_failure(job, stage, shard, {"stage": stage, "shard": shard, "status": "failed", "error": error,
                                      "attempts": attempts, "finished_at": time.time()})
    return attempts


def sample_name(sample: Sample) -> str:
    """The page's source file name, for messages."""
    try:
        return json.loads(sample["json"]).get("source", sample["__key__"])
    except Exception:
        return sample.get("__key__", "?")


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
