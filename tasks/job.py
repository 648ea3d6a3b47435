"""Prefect tasks for the job-level steps: ingest, reference store, export + report."""

from __future__ import annotations

from dataclasses import asdict

from prefect import task

from chromaflow.config import Config
from chromaflow.storage.export import export_job
from chromaflow.storage.ingest import ingest
from chromaflow.storage.job import JobDir
from chromaflow.storage.manifest import write_manifest
from chromaflow.storage.report import write_report


@task(name="ingest", retries=2, retry_delay_seconds=1)
def ingest_task(source: str, job_root: str, config_json: dict) -> dict:
    job = JobDir.open(job_root)
    summary = ingest(source, job, Config.model_validate(config_json))
    info = job.read_info()
    info.update(num_shards=summary.num_shards, num_items=summary.num_items, fps=summary.fps)
    job.write_info(info)
    return asdict(summary)


@task(name="build-reference-store", retries=2, retry_delay_seconds=1)
def reference_store_task(refs: str, job_root: str, config_json: dict) -> str:
    from chromaflow.retrieval.store import ReferenceStore

    job = JobDir.open(job_root)
    store = ReferenceStore.build(refs, job.references, Config.model_validate(config_json))
    return store.fingerprint


@task(name="remember-palettes", retries=2, retry_delay_seconds=1)
def palette_memory_task(job_root: str, config_json: dict) -> str | None:
    """Each identity's colors, clustered once before any page is colorized (so shards
    colorized in parallel agree); returns the memory file, or None when disabled."""
    from chromaflow.retrieval.palette import write_job_palette_memory
    from chromaflow.retrieval.stage import open_store

    config = Config.model_validate(config_json)
    if not config.colorize.palette_memory:
        return None
    job = JobDir.open(job_root)
    path = write_job_palette_memory(open_store(job, config), job.palette_memory, config.colorize.palette_tolerance,
                                    config.colorize.palette_memory_seed)
    return str(path)


@task(name="export", retries=2, retry_delay_seconds=1)
def export_task(job_root: str, failures: list[str], force: bool = True) -> dict:
    """Pages, cbz/mp4, manifest and report. With force=False (nothing was recomputed) the
    existing outputs are kept and only listed."""
    job = JobDir.open(job_root)
    exported = export_job(job, write=force)
    rows = write_manifest(job)
    report = job.root / "report.html"
    if force or not report.exists():
        report = write_report(job, rows, exported["pages"], failures,
                              job.read_info()["config"]["export"]["report_thumb_size"])
    return {**exported, "report": str(report), "manifest": rows}
