"""Shard files: WebDataset tars, their stats files (the "done" marker) and failure records.

The per-shard stage runner built on them is stages/runner.py; the format is docs/storage.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import webdataset as wds

from .atomic import atomic_path, write_json
from .job import JobDir

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


def write_stats(job: JobDir, stage: str, shard: int, stats: dict[str, Any]) -> None:
    write_json(job.stats_path(stage, shard), stats)


def write_failure(job: JobDir, stage: str, shard: int, failure: dict[str, Any]) -> None:
    write_json(job.failed_path(stage, shard), failure)
