"""manifest.parquet: one row per (shard, stage), derived from the stats/failed files.

The per-shard files are the source of truth (each written atomically by the worker that
owns the shard), so concurrent workers never contend for the manifest; it is rebuilt
whenever someone needs a table (progress, `chromaflow status`, end of a run).
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import write_bytes
from .job import JobDir
from .shards import read_failure, read_stats

OK, PARTIAL, FAILED, MISSING = "ok", "partial", "failed", "missing"

SCHEMA = pa.schema([
    ("shard", pa.int32()),
    ("stage", pa.string()),
    ("status", pa.string()),
    ("attempts", pa.int32()),
    ("error", pa.string()),
    ("samples", pa.int32()),
    ("pages_failed", pa.int32()),
    ("input_sha256", pa.string()),
    ("output_sha256", pa.string()),
    ("seconds", pa.float64()),
])


def manifest_rows(job: JobDir, stages: tuple[str, ...], num_shards: int | None = None) -> list[dict]:
    """One row per (shard, stage) for the given shard sets (stages/registry.py SHARD_SETS)."""
    shards = job.num_shards() if num_shards is None else num_shards
    rows = []
    for shard in range(shards):
        for stage in stages:
            stats = read_stats(job, stage, shard)
            failure = read_failure(job, stage, shard)
            if stats is not None:
                failed = stats.get("failed", [])
                rows.append({
                    "shard": shard, "stage": stage, "status": stats.get("status", OK),
                    "attempts": int(stats.get("attempts", 1)),
                    "error": "; ".join(f["error"] for f in failed) or None,
                    "samples": int(stats.get("count", 0)), "pages_failed": len(failed),
                    "input_sha256": stats.get("input_sha256"), "output_sha256": stats.get("output_sha256"),
                    "seconds": float(stats.get("seconds", 0.0)),
                })
            elif failure is not None:
                rows.append({
                    "shard": shard, "stage": stage, "status": FAILED, "attempts": int(failure.get("attempts", 1)),
                    "error": failure.get("error"), "samples": 0, "pages_failed": 0,
                    "input_sha256": None, "output_sha256": None, "seconds": 0.0,
                })
            else:
                rows.append({
                    "shard": shard, "stage": stage, "status": MISSING, "attempts": 0, "error": None,
                    "samples": 0, "pages_failed": 0, "input_sha256": None, "output_sha256": None, "seconds": 0.0,
                })
    return rows


def write_manifest(job: JobDir, stages: tuple[str, ...], num_shards: int | None = None) -> list[dict]:
    rows = manifest_rows(job, stages, num_shards)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes(job.manifest, buf.getvalue())
    return rows


def read_manifest(job: JobDir) -> list[dict]:
    return pq.read_table(job.manifest).to_pylist()


def incomplete_pairs(rows: list[dict]) -> list[tuple[int, str]]:
    """(shard, stage) pairs a rerun must redo: failed or missing ones."""
    return [(r["shard"], r["stage"]) for r in rows if r["status"] in (FAILED, MISSING)]
