"""The colorize DAG as Prefect flows (stages/registry.py is the stage table).

    ingest ─▶ lines ─▶ retrieve ─▶ colorize ─▶ upscale ─▶ export
              (per shard)          (Ray actor pool, per shard)
    references ─▶ palette_memory ──────▲
                  (each identity's colors, once per job)

`colorize-chapter` and `colorize-episode` run the same DAG on different sources;
`rerun-failed-shards` runs it again on an existing job folder, where every (shard, stage)
that already finished from the same inputs and config is skipped, so only failed or
missing shards and what depends on them are computed.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import (create_link_artifact, create_markdown_artifact, create_progress_artifact,
                               create_table_artifact, update_progress_artifact)
from prefect.task_runners import ThreadPoolTaskRunner

from chromaflow.conf import Config, load_config
from chromaflow.flows.summary import JobIncomplete, JobSummary
from chromaflow.models.palette_memory import PaletteMemory
from chromaflow.retrieval.references import scan_reference_folder
from chromaflow.stages.pool import StagePool
from chromaflow.stages.registry import FINAL, SHARD_SETS, SHARD_STAGES
from chromaflow.stages.report import before_after_uris
from chromaflow.stages.runner import is_done
from chromaflow.stages.workers import PooledStages
from chromaflow.storage.atomic import remove_stale_temp_files
from chromaflow.storage.job import JobDir, safe_job_name
from chromaflow.storage.manifest import incomplete_pairs, write_manifest
from chromaflow.storage.shards import read_stats
from chromaflow.storage.sources import CHAPTER, EPISODE, SourceError, source_kind
from chromaflow.tasks.stages import (colorize_task, export_task, ingest_task, lines_task, palette_memory_task,
                                     references_task, retrieve_task, upscale_task)

SHARD_TASKS = {"lines": lines_task, "retrieve": retrieve_task, "colorize": colorize_task, "upscale": upscale_task}


def prepare_job(source: str, refs: str, out: str | None, config: Config, kind: str) -> JobDir:
    """Validate inputs up front (one-line errors) and write job.json."""
    source_path = Path(source).resolve()
    actual = source_kind(source_path)
    if actual != kind:
        raise SourceError(f"{source_path}: is an {actual} source; use the colorize-{actual} flow")
    scan_reference_folder(refs)  # missing/empty refs folder: fail before any work
    if config.colorize.palette_memory and config.colorize.palette_memory_seed:
        PaletteMemory.load(config.colorize.palette_memory_seed)  # a broken seed file, likewise
    name = safe_job_name(config.job.name or source_path.stem or source_path.name)
    root = Path(out).resolve() if out else Path.cwd() / "chromaflow-out" / name
    root.mkdir(parents=True, exist_ok=True)
    job = JobDir(root, name)
    previous = job.read_info() if job.job_json.exists() else {}
    if previous and previous.get("name") != name:
        raise ValueError(f"{root}: holds job {previous.get('name')!r}, not {name!r}; choose another --out")
    job.write_info({**previous, "name": name, "kind": kind, "source": str(source_path),
                    "refs": str(Path(refs).resolve()), "config": config.model_dump(mode="json"),
                    "created_at": previous.get("created_at", time.time())})
    return job


def run_pipeline(job: JobDir, config: Config) -> JobSummary:
    logger = get_run_logger()
    info = job.read_info()
    cfg = config.model_dump(mode="json")
    root = str(job.root)
    removed = remove_stale_temp_files(job.root)
    if removed:
        logger.info("removed %d temp files left by an interrupted run", removed)
    retries = {"retries": config.prefect.task_retries, "retry_delay_seconds": config.prefect.retry_delay_seconds}
    summary = JobSummary(job_root=root, name=job.name, kind=info["kind"])
    finished_before = all_shards_finished(job)
    with ThreadPoolTaskRunner(max_workers=config.prefect.max_parallel_tasks) as runner:
        ingest_future = runner.submit(ingest_task.with_options(**retries),
                                      {"job_root": root, "source": info["source"], "config_json": cfg})
        references_future = runner.submit(references_task.with_options(**retries),
                                          {"job_root": root, "refs": info["refs"], "config_json": cfg})
        # Ray and the actors (which load the models) start while ingest runs, unless an
        # earlier run finished every shard (a rerun then needs no Ray at all). Ray is started
        # from this thread on purpose: Ray ties its daemons' lives to the starting *thread*
        # (PR_SET_PDEATHSIG), so a short-lived helper thread would take the cluster along.
        pool = None if finished_before else StagePool(config, PooledStages)
        try:
            summary.add_ingest(ingest_future.result())
            references_future.result()
            palette_memory_task.with_options(**retries)(root, cfg)
            pool = _run_shard_stages(job, config, runner, summary, pool, retries)
        finally:
            if pool is not None:
                pool.close()
    summary.add_export(export_task.with_options(**retries)(root, summary.problem_lines(),
                                                           force=summary.computed > 0))
    _publish_artifacts(job, summary)
    return summary


def _run_shard_stages(job: JobDir, config: Config, runner: ThreadPoolTaskRunner, summary: JobSummary,
                      pool: StagePool | None, retries: dict) -> StagePool | None:
    """Every shard stage over every shard, stage by stage; returns the pool (started here
    when pooled work turned out to be pending)."""
    root, cfg = str(job.root), config.model_dump(mode="json")
    shards = list(range(job.num_shards()))
    progress = create_progress_artifact(0.0, key=_artifact_key(job, "progress"),
                                        description=f"{job.name}: shard stages done")
    total, done = max(1, len(shards) * len(SHARD_STAGES)), 0
    ok = shards
    for stage, spec in SHARD_STAGES.items():
        if spec.on_pool and pool is None and pooled_work_pending(job, ok, config):
            pool = StagePool(config, PooledStages)
        task = SHARD_TASKS[stage] if spec.on_pool else SHARD_TASKS[stage].with_options(**retries)
        extra = {"pool": pool} if spec.on_pool else {}
        futures = {runner.submit(task, {"job_root": root, "shard": shard, "config_json": cfg, **extra}): shard
                   for shard in ok}
        finished = []
        for future, shard in futures.items():
            future.wait()
            if future.state.is_completed():
                finished.append(shard)
                summary.add_shard_result(future.result())
            else:
                summary.add_shard_failure(stage, shard, _state_error(future))
            done += 1
            update_progress_artifact(progress, 100.0 * done / total)
        ok = sorted(finished)
    update_progress_artifact(progress, 100.0)
    return pool


def all_shards_finished(job: JobDir) -> bool:
    """Every final shard of an earlier run is there (cheap check before starting Ray)."""
    shards = job.read_info().get("num_shards")
    return bool(shards) and all(read_stats(job, FINAL, k) is not None for k in range(shards))


def pooled_work_pending(job: JobDir, shards: list[int], config: Config) -> bool:
    """Whether any pooled (shard, stage) must run: not done for its current inputs and
    config (a stage after one that must run is never done yet)."""
    pooled = [name for name, spec in SHARD_STAGES.items() if spec.on_pool]
    return any(not is_done(job, stage, shard, config) for shard in shards for stage in pooled)


def _state_error(future) -> str:
    try:
        future.result()
    except Exception as exc:  # the task's own exception, re-raised by Prefect
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}"
    return str(future.state.message or future.state.name)


def _artifact_key(job: JobDir, what: str) -> str:
    # Artifact keys allow only lowercase letters, digits and dashes.
    return f"{job.name.lower().replace('_', '-')}-{what}"[:100]


def _publish_artifacts(job: JobDir, summary: JobSummary) -> None:
    rows = summary.manifest
    table = []
    for shard in sorted({r["shard"] for r in rows}):
        entry = {"shard": shard}
        for r in rows:
            if r["shard"] == shard:
                entry[r["stage"]] = r["status"]
        table.append(entry)
    create_table_artifact(table, key=_artifact_key(job, "shards"), description=f"{job.name}: per-shard status")
    if summary.pages:
        create_table_artifact([{"page": p["index"] + 1, "source": p["source"],
                                "identities": ", ".join(i or "(unnamed pool)" for i in p["identities"]) or "unknown",
                                "references": ", ".join(p["references"])} for p in summary.pages],
                              key=_artifact_key(job, "identities"), description=f"{job.name}: identities per page")
    pages = summary.pages[:4]
    if pages:
        # Image artifacts need a public URL; the job's pages are local, so the before/after
        # pairs travel inside the markdown as small JPEG data URIs.
        lines = [f"### {job.name}: before / after (first {len(pages)} pages)", ""]
        pairs = before_after_uris(job, pages)
        for page in pages:
            pair = pairs.get(page["key"])
            lines += [f"**{page['source']}** · identities: {', '.join(page['identities']) or 'unknown'}", ""]
            lines += [f"![before / after]({pair})", ""] if pair else []
        lines += [f"Full contact sheet: `{summary.report}`"]
        create_markdown_artifact("\n".join(lines), key=_artifact_key(job, "before-after"))
    if summary.report:
        create_link_artifact(Path(summary.report).as_uri(), link_text="report.html", key=_artifact_key(job, "report"))


def _colorize(source: str, refs: str, out: str | None, config_path: str | None, overrides: list[str] | None,
              kind: str) -> dict:
    config = load_config(config_path, overrides)
    job = prepare_job(source, refs, out, config, kind)
    summary = run_pipeline(job, config)
    summary.raise_if_incomplete()
    return summary.to_dict()


@flow(name="colorize-chapter", log_prints=True)
def colorize_chapter(source: str, refs: str, out: str | None = None, config_path: str | None = None,
                     overrides: list[str] | None = None) -> dict:
    """Colorize a manga chapter: a folder of pages, a .cbz/.zip or a single image."""
    return _colorize(source, refs, out, config_path, overrides, CHAPTER)


@flow(name="colorize-episode", log_prints=True)
def colorize_episode(source: str, refs: str, out: str | None = None, config_path: str | None = None,
                     overrides: list[str] | None = None) -> dict:
    """Colorize an anime episode (a video file), frame by frame with scene ids."""
    return _colorize(source, refs, out, config_path, overrides, EPISODE)


@flow(name="rerun-failed-shards", log_prints=True)
def rerun_failed_shards(out: str) -> dict:
    """Finish an existing job: redo failed/missing (shard, stage) pairs and what depends on them."""
    job = JobDir.open(out)
    info = job.read_info()
    config = Config.model_validate(info["config"])
    todo = incomplete_pairs(write_manifest(job, SHARD_SETS)) if info.get("num_shards") else []
    get_run_logger().info("%s: %d (shard, stage) pairs failed or missing%s", job.name, len(todo),
                          (": " + ", ".join(f"{stage}/{shard:06d}" for shard, stage in todo[:20])) if todo else "")
    summary = run_pipeline(job, config)
    summary.raise_if_incomplete()
    return summary.to_dict()


def colorize(source: str, refs: str, out: str | None = None, config_path: str | None = None,
             overrides: list[str] | None = None) -> dict:
    """Pick the chapter or episode flow from the source type."""
    kind = source_kind(source)
    flow_fn = colorize_episode if kind == EPISODE else colorize_chapter
    return flow_fn(source=source, refs=refs, out=out, config_path=config_path, overrides=overrides)


__all__ = ["colorize", "colorize_chapter", "colorize_episode", "rerun_failed_shards", "run_pipeline",
           "prepare_job", "JobIncomplete"]
