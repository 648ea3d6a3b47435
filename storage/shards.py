"""Shard I/O and the per-shard stage runner (img2dataset style).

Each (stage, shard) reads its input shards, processes samples one by one, writes one
WebDataset tar atomically and then its stats JSON. The stats file is written last: it is
the only "done" marker, so a run killed mid-shard leaves that shard unfinished and a
resumed run redoes exactly it. A sample that fails is left out of the output and listed
in the stats (status "partial"); an exception outside a sample marks the whole shard
failed (`.failed.json`, with an attempt counter).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import webdataset as wds

from .atomic import atomic_path, write_json
from .job import STAGE_INPUTS, JobDir

Sample = dict[str, Any]  # {"__key__": str, "<ext>": bytes, ...}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_shard(path: str | Path, samples: list[Sample]) -> None:
    """Write samples as a WebDataset tar, atomically. Values must already be bytes.
    mtime is fixed so identical samples give byte-identical shards."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            writer = wds.TarWriter(f, encoder=False, mtime=0.0, user="chromaflow", group="chromaflow")
            for sample in samples:
                key = sample["__key__"]
                if "." in key or "/" in key:
                    raise ValueError(f"shard key {key!r} must not contain '.' or '/'")
                writer.write(sample)
            writer.close()


def read_shard(path: str | Path) -> list[Sample]:
    """All samples of one shard, in stored order, values as raw bytes."""
    dataset = wds.WebDataset(str(path), shardshuffle=False, empty_check=False)
    samples = []
    for sample in dataset:
        samples.append({k: v for k, v in sample.items() if k not in ("__url__", "__local_path__")})
    return samples


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def read_json_value(sample: Sample, ext: str = "json") -> Any:
    return json.loads(sample[ext])


# --- stats ------------------------------------------------------------------------------

def read_stats(job: JobDir, stage: str, shard: int) -> dict[str, Any] | None:
    try:
        return json.loads(job.stats_path(stage, shard).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_failure(job: JobDir, stage: str, shard: int) -> dict[str, Any] | None:
    try:
        return json.loads(job.failed_path(stage, shard).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def input_fingerprint(job: JobDir, stage: str, shard: int, extra: str = "") -> str | None:
    """Hash of the stage's input shards (from their stats, so nothing is re-read), or None
    when an input shard is not finished."""
    parts = [extra]
    for upstream in STAGE_INPUTS[stage]:
        stats = read_stats(job, upstream, shard)
        if stats is None:
            return None
        parts.append(f"{upstream}:{stats['output_sha256']}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def is_done(job: JobDir, stage: str, shard: int, input_sha: str | None, config_sha: str) -> bool:
    """Finished earlier from the same inputs and config, and the output is still there."""
    stats = read_stats(job, stage, shard)
    if stats is None or input_sha is None:
        return False
    out = job.shard_path(stage, shard)
    return (stats.get("input_sha256") == input_sha and stats.get("config_sha256") == config_sha
            and out.exists() and out.stat().st_size == stats.get("output_bytes"))


@dataclass
class ShardResult:
    stage: str
    shard: int
    status: str  # ok | partial | failed | cached
    count: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


SampleProcessor = Callable[[str, dict[str, Sample]], Sample]
# A batch processor gets [(key, inputs), ...] and returns one output sample per item.
def cached_result(job: JobDir, stage: str, shard: int) -> "ShardResult":
    """The result of a (stage, shard) that an earlier run finished."""
    stats = read_stats(job, stage, shard)
    if stats is None:
        raise RuntimeError(f"{stage} shard {shard} has no finished result")
    return ShardResult(stage, shard, "cached", stats.get("count", 0), stats.get("failed", []))


BatchProcessor = Callable[[list[tuple[str, dict[str, Sample]]]], list[Sample]]


def run_stage_shard(job: JobDir, stage: str, shard: int, config_sha: str, process: SampleProcessor | None = None,
                    extra_input: str = "", process_batch: BatchProcessor | None = None,
                    batch_size: int = 1) -> ShardResult:
    """Run one stage over one shard: read inputs, process the samples, write output + stats.

    `process(key, inputs)` gets the sample key and {input_stage: sample} and returns the
    output sample (without __key__). It raises (any exception) for a page it cannot
    handle: that page is listed in the stats and left out. Models that are faster on
    several pages at once give `process_batch` instead; a batch that raises is retried
    page by page, so one bad page still only costs itself.
    """
    if process_batch is None:
        if process is None:
            raise TypeError("run_stage_shard needs process or process_batch")
        process_batch, batch_size = (lambda items: [process(key, joined) for key, joined in items]), 1
    input_sha = input_fingerprint(job, stage, shard, extra_input)
    if input_sha is None:
        raise RuntimeError(f"{stage} shard {shard}: an input shard is not finished")
    if is_done(job, stage, shard, input_sha, config_sha):
        return cached_result(job, stage, shard)
    started = time.time()
    inputs = {name: read_shard(job.shard_path(name, shard)) for name in STAGE_INPUTS[stage]}
    # Samples are driven by the first input (frames order); other inputs are joined by key.
    lead, *others = STAGE_INPUTS[stage]
    by_key = {name: {s["__key__"]: s for s in inputs[name]} for name in others}
    items = []
    for sample in inputs[lead]:
        key = sample["__key__"]
        if any(key not in by_key[name] for name in others):
            continue  # the page failed upstream; it is already reported there
        items.append((key, {lead: sample, **{name: by_key[name][key] for name in others}}))
    outputs: list[Sample] = []
    failed: list[dict[str, str]] = []
    for start in range(0, len(items), max(1, batch_size)):
        batch = items[start:start + max(1, batch_size)]
        try:
            results = process_batch(batch)
        except Exception as exc:
            results = [exc] if len(batch) == 1 else [_try_one(process_batch, item) for item in batch]
        for (key, joined), out in zip(batch, results):
            if isinstance(out, Exception):  # one bad page must not sink the shard
                failed.append({"key": key, "name": _sample_name(joined[lead]), "error": _one_line(out)})
            else:
                outputs.append({"__key__": key, **out})
    return finish_shard(job, stage, shard, outputs, failed, input_sha, config_sha, started)


def _try_one(process_batch: BatchProcessor, item) -> Sample | Exception:
    try:
        return process_batch([item])[0]
    except Exception as exc:
        return exc


def finish_shard(job: JobDir, stage: str, shard: int, outputs: list[Sample], failed: list[dict[str, str]],
                 input_sha: str, config_sha: str, started: float) -> ShardResult:
    """Write the shard tar, then its stats (last, the done marker)."""
    out_path = job.shard_path(stage, shard)
    write_shard(out_path, outputs)
    previous = read_failure(job, stage, shard)
    seconds = time.time() - started
    stats = {
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
    }
    write_json(job.stats_path(stage, shard), stats)
    if previous is not None:
        job.failed_path(stage, shard).unlink(missing_ok=True)
    return ShardResult(stage, shard, stats["status"], len(outputs), failed, seconds=seconds)


def record_failure(job: JobDir, stage: str, shard: int, error: str) -> int:
    """Mark a (stage, shard) failed; returns the attempt count so far."""
    previous = read_failure(job, stage, shard) or {}
    attempts = int(previous.get("attempts", 0)) + 1
    write_json(job.failed_path(stage, shard), {
        "stage": stage, "shard": shard, "status": "failed", "error": error,
        "attempts": attempts, "finished_at": time.time(),
    })
    return attempts


def _sample_name(sample: Sample) -> str:
    try:
        return json.loads(sample["json"]).get("source", sample["__key__"])
    except Exception:
        return sample.get("__key__", "?")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
