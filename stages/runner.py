"""Running one shard stage over one shard (img2dataset style).

A (stage, shard) reads its input shard sets, processes the samples, writes one WebDataset
tar atomically and then its stats JSON. The stats file is written last: it is the only
"done" marker, so a run killed mid-shard leaves that shard unfinished and a resumed run
redoes exactly it. A sample that fails is left out of the output and listed in the stats
(status "partial"); an exception outside a sample marks the whole shard failed
(`.failed.json`, with an attempt counter). What a result depends on is
`registry.stage_key`; a shard whose stats match it and whose tar is intact is not redone.

Memory: input shards are streamed and joined by key (every shard set of a shard holds its
samples in reading order), outputs are written as they are made, so a stage holds one
batch of pages, never a whole shard. A full disk (storage.atomic.DiskFull) is not a page
failure: it fails the shard at once, and the pool and the flow stop the job on it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from chromaflow.conf import Config
from chromaflow.storage.atomic import DiskFull
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import (Sample, iter_shard, key_order, read_failure, read_stats, sha256_file,
                                       write_failure, write_shard, write_stats)

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
    """Run a shard stage over one shard: stream the inputs, process the samples in batches,
    write output + stats. A batch that raises is retried page by page, so one bad page
    still only costs itself."""
    input_sha, config_sha = stage_key(job, stage, shard, config)
    if input_sha is None:
        raise RuntimeError(f"{stage} shard {shard}: an input shard is not finished")
    if is_done(job, stage, shard, config):
        return cached_stats(job, stage, shard)
    started = time.time()
    lead = SHARD_STAGES[stage].inputs[0]
    failed: list[dict[str, str]] = []

    def outputs() -> Iterator[Sample]:
        for batch in _batches(joined_inputs(job, stage, shard), max(1, batch_size)):
            try:
                results = process_batch(batch)
            except Exception as exc:
                results = [exc] if len(batch) == 1 else [_try_one(process_batch, item) for item in batch]
            for (key, joined), out in zip(batch, results):
                if isinstance(out, Exception):  # one bad page must not sink the shard
                    failed.append({"key": key, "name": sample_name(joined[lead]), "error": one_line(out)})
                else:
                    yield {"__key__": key, **out}

    return finish_shard(job, stage, shard, outputs(), failed, input_sha, config_sha, started)


def joined_inputs(job: JobDir, stage: str, shard: int) -> Iterator[tuple[str, dict[str, Sample]]]:
    """(key, {input stage: sample}) for the samples every input shard holds, streamed: the
    inputs are read side by side (all in key order); a key missing from one input is a page
    that failed upstream and is already reported there."""
    lead, *others = SHARD_STAGES[stage].inputs
    streams = {name: iter_shard(job.shard_path(name, shard)) for name in others}
    heads = {name: next(streams[name], None) for name in others}
    previous = None
    for sample in iter_shard(job.shard_path(lead, shard)):
        key = sample["__key__"]
        if previous is not None and key_order(key) <= key_order(previous):
            raise RuntimeError(f"{job.shard_path(lead, shard)}: samples out of key order at {key}")
        previous = key
        joined = {lead: sample}
        for name in others:
            while heads[name] is not None and key_order(heads[name]["__key__"]) < key_order(key):
                heads[name] = next(streams[name], None)
            if heads[name] is None or heads[name]["__key__"] != key:
                break
            joined[name] = heads[name]
        else:
            yield key, joined


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _try_one(process_batch: BatchProcessor, item) -> Sample | Exception:
    try:
        return process_batch([item])[0]
    except Exception as exc:
        return exc


def finish_shard(job: JobDir, stage: str, shard: int, outputs: Iterable[Sample], failed: list[dict[str, str]],
                 input_sha: str, config_sha: str, started: float) -> ShardStats:
    """Write the shard tar, then its stats (last: the done marker). `outputs` may be a
    generator that appends to `failed` as it goes: it is consumed before the stats."""
    out_path = job.shard_path(stage, shard)
    count = write_shard(out_path, outputs)
    previous = read_failure(job, stage, shard)
    seconds = time.time() - started
    write_stats(job, stage, shard, {
        "stage": stage,
        "shard": shard,
        "status": "partial" if failed else "ok",
        "count": count,
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
    return ShardStats(stage, shard, "partial" if failed else "ok", count, failed, seconds=seconds)


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


def is_transient(exc: BaseException | None) -> bool:
    """Whether another attempt may succeed. Not for a full disk (it fails the job at once)
    nor for unusable input: the job's own errors for that are ValueErrors (SourceError,
    ReferenceFolderError, ImageError, ...), and they fail the same way every time."""
    return not isinstance(exc, (DiskFull, ValueError))
