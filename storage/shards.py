"""Shard files: WebDataset tars, their stats files (the "done" marker) and failure records.

The per-shard stage runner built on them is stages/runner.py; the format is docs/storage.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

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


def _tar_bytes(samples: list[Sample]) -> int:
    """Size of the tar these samples make (512-byte header + padded data per member)."""
    members = [v for s in samples for k, v in s.items() if not k.startswith("__")]
    return sum(512 + (len(v) + 511) // 512 * 512 for v in members) + 1024


def write_shard(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples as a WebDataset tar, atomically; returns how many were written. Values
    must already be bytes. Samples may come from a generator: they are written as they
    come, so a stage holds one page at a time, not the shard. mtime is fixed so identical
    samples give byte-identical shards."""
    expected = _tar_bytes(samples) if isinstance(samples, list) else 0
    count = 0
    with atomic_path(path, expected) as tmp:
        with open(tmp, "wb") as f:
            writer = wds.TarWriter(f, encoder=False, mtime=0.0, user="chromaflow", group="chromaflow")
            for sample in samples:
                key = sample["__key__"]
                if "." in key or "/" in key:
                    raise ValueError(f"shard key {key!r} must not contain '.' or '/'")
                writer.write(sample)
                count += 1
            writer.close()
    return count


def iter_shard(path: str | Path) -> Iterator[Sample]:
    """The samples of one shard in stored order, values as raw bytes, read one at a time."""
    dataset = wds.WebDataset(str(path), shardshuffle=False, empty_check=False)
    for sample in dataset:
        yield {k: v for k, v in sample.items() if k not in ("__url__", "__local_path__")}


def read_shard(path: str | Path) -> list[Sample]:
    """All samples of one shard, in stored order (small shards; stages stream with iter_shard)."""
    return list(iter_shard(path))


def key_order(key: str) -> tuple[int, str]:
    """Sample keys (p000012) sort by length first, so p1000000 comes after p999999."""
    return len(key), key


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
