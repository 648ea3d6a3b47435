"""The colorize DAG as Prefect flows (stages/registry.py is the stage table).

    ingest ─▶ lines ─▶ instances ─▶ retrieve ─▶ colorize ─▶ upscale ─▶ export
              (chained per shard: flows/shard_stages.py; colorize/upscale on the Ray actor pool)
    references ─▶ palette_memory ──────────────────▲
                  (each identity's colors, once per job)

`colorize-chapter` and `colorize-episode` run the same DAG on different sources;
`rerun-failed-shards` runs it again on an existing job folder, where every (shard, stage)
that already finished from the same inputs and config is skipped, so only failed or
missing shards and what depends on them are computed.

A run is named `<job name>-<job id>` (flows/job_state.py). It ends Completed, or Failed with
the one-line summary when pages or shards failed, or when its inputs are unusable (then
nothing was created); never with a traceback for either.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from chromaflow.conf import Config, load_config
from chromaflow.flows.artifacts import publish_artifacts
from chromaflow.flows.job_state import job_id, mark_finished
from chromaflow.flows.run_log import forward_chromaflow_logs
from chromaflow.flows.shard_stages import ShardStages, thread_pool_size
from chromaflow.flows.summary import INPUT_ERRORS, JobIncomplete, JobSummary, OutFolderError, input_error_state
from chromaflow.models.palette_memory import PaletteMemory
from chromaflow.retrieval.references import scan_reference_folder
from chromaflow.stages.pool import StagePool
from chromaflow.stages.registry import FINAL, SHARD_SETS, SHARD_STAGES
from chromaflow.stages.runner import is_done, is_transient
from chromaflow.stages.workers import PooledStages
from chromaflow.storage.atomic import DiskFull, remove_stale_temp_files
from chromaflow.storage.job import JobDir, JobLocked, job_lock, safe_job_name
from chromaflow.storage.manifest import write_manifest
from chromaflow.storage.shards import read_stats
from chromaflow.storage.sources import CHAPTER, EPISODE, SourceError, list_chapter, source_kind
from chromaflow.storage.video import probe_video
from chromaflow.tasks.stages import export_task, ingest_task, palette_memory_task, references_task


def check_job_inputs(source: str, refs: str, config: Config, kind: str) -> Path:
    """Validate inputs up front (one-line errors); creates nothing. Returns the source path."""
    source_path = Path(source).resolve()
    actual = source_kind(source_path)
    if actual != kind:
        raise SourceError(f"{source_path}: is an {actual} source; use the colorize-{actual} flow")
    check_source_readable(source_path, kind)
    scan_reference_folder(refs)  # missing/empty refs folder: fail before any work
    if config.colorize.palette_memory and config.colorize.palette_memory_seed:
        PaletteMemory.load(config.colorize.palette_memory_seed)  # a broken seed file, likewise
    return source_path


def check_source_readable(source_path: Path, kind: str) -> None:
    """The source opens and holds pages (single bad pages are the run's problems, not this)."""
    if kind == EPISODE:
        probe_video(source_path)
        return
    if not os.access(source_path, os.R_OK | (os.X_OK if source_path.is_dir() else 0)):
        raise SourceError(f"{source_path}: not readable (permission denied)")
    if not list_chapter(source_path).pages:
        raise SourceError(f"{source_path}: holds no page images")


def job_folder(source_path: Path, out: str | None, config: Config) -> tuple[Path, str]:
    """(job folder, job name) of a run; nothing is created."""
    name = safe_job_name(config.job.name or source_path.stem or source_path.name)
    return (Path(out).resolve() if out else Path.cwd() / "chromaflow-out" / name), name


def check_job_folder(root: Path, name: str) -> dict:
    """job.json of an earlier run in `root` ({} when none); refuses a folder of another job."""
    job = JobDir(root, name)
    previous = job.read_info() if job.job_json.exists() else {}
    if previous and previous.get("name") != name:
        raise OutFolderError(f"{root}: holds job {previous.get('name')!r}, not {name!r}; choose another --out")
    return previous


def prepare_job(source: str, refs: str, out: str | None, config: Config, kind: str) -> JobDir:
    """Validate inputs up front (nothing is created when they fail), then write job.json."""
    return write_job_info(check_job_inputs(source, refs, config, kind), refs, out, config, kind)


def write_job_info(source_path: Path, refs: str, out: str | None, config: Config, kind: str) -> JobDir:
    """job.json of a run whose inputs were checked (check_job_inputs), written under the job
    folder's lock (shared with the caller's hold when it has one, as in _colorize)."""
    root, name = job_folder(source_path, out, config)
    with job_lock(root):
        previous = check_job_folder(root, name)
        job = JobDir(root, name)
        job.write_info({**previous, "name": name, "kind": kind, "source": str(source_path),
                        "refs": str(Path(refs).resolve()), "config": config.model_dump(mode="json"),
                        "created_at": previous.get("created_at", time.time())})
    return job


def _retry_transient(task, task_run, state) -> bool:
    """Prefect retry condition: a full disk or unusable input fails at once (no retries)."""
    return is_transient(state.data if isinstance(state.data, BaseException) else None)


def run_pipeline(job: JobDir, config: Config) -> JobSummary:
    # One writer per job folder, for the whole run (a caller's hold is shared).
    with job_lock(job.root):
        return _run_pipeline_locked(job, config)


def _run_pipeline_locked(job: JobDir, config: Config) -> JobSummary:
    logger = get_run_logger()
    info = job.read_info()
    cfg = config.model_dump(mode="json")
    root = str(job.root)
    removed = remove_stale_temp_files(job.root)
    if removed:
        logger.info("removed %d temp files left by an interrupted run", removed)
    retries = {"retries": config.prefect.task_retries, "retry_delay_seconds": config.prefect.retry_delay_seconds,
               "retry_condition_fn": _retry_transient}
    summary = JobSummary(job_root=root, name=job.name, kind=info["kind"], job_id=job_id(job.root))
    finished_before = all_shards_finished(job)
    with ThreadPoolTaskRunner(max_workers=thread_pool_size(config)) as runner:
        ingest_future = runner.submit(ingest_task.with_options(**retries),
                                      {"job_root": root, "source": info["source"], "config_json": cfg})
        references_future = runner.submit(references_task.with_options(**retries),
                                          {"job_root": root, "refs": info["refs"], "config_json": cfg})
        # Ray and the actors (which load the models) start while ingest runs, unless an
        # earlier run finished every shard (a rerun then needs no Ray at all). Ray is started
        # from this thread on purpose: Ray ties its daemons' lives to the starting *thread*
        # (PR_SET_PDEATHSIG), so a short-lived helper thread would take the cluster along.
        # The shard stages' loop (ShardStages.run) runs in this thread too, so a pool it
        # starts later obeys the same rule.
        pool = None if finished_before else StagePool(config, PooledStages)
        try:
            summary.add_ingest(ingest_future.result())
            references_future.result()
            palette_memory_task.with_options(**retries)(root, cfg)
            pool = ShardStages(job, config, runner, summary, pool, retries).run(list(range(job.num_shards())))
        finally:
            if pool is not None:
                pool.close()
    summary.add_export(export_task.with_options(**retries)(root, summary.problem_lines(),
                                                           force=summary.computed > 0))
    publish_artifacts(job, summary, config.prefect.artifact_pages)
    mark_finished(job, info["source"], config, len(summary.shard_failures), len(summary.problem_lines()))
    return summary


def all_shards_finished(job: JobDir) -> bool:
    """Every final shard of an earlier run is there (cheap check before starting Ray)."""
    shards = job.read_info().get("num_shards")
    return bool(shards) and all(read_stats(job, FINAL, k) is not None for k in range(shards))


def plan_rerun(job: JobDir, config: Config) -> dict[str, list[str]]:
    """What a rerun will redo, as `stage/shard` labels: failed, missing, stale (done from
    other inputs or config), downstream (after one of those), and what it reuses."""
    plan: dict[str, list[str]] = {"failed": [], "missing": [], "stale": [], "downstream": [], "reused": []}
    shards = job.num_shards()
    status = {(r["shard"], r["stage"]): r["status"] for r in write_manifest(job, SHARD_SETS)} if shards else {}
    for shard in range(shards):
        redone = False
        for stage in SHARD_SETS:
            label = f"{stage}/{shard:06d}"
            if status.get((shard, stage)) in ("failed", "missing"):
                plan[status[(shard, stage)]].append(label)
                redone = True
            elif redone:
                plan["downstream"].append(label)
            elif stage in SHARD_STAGES and not is_done(job, stage, shard, config):
                plan["stale"].append(label)
                redone = True
            else:
                plan["reused"].append(label)
    return plan


def with_weights(overrides: list[str] | None, weights: str | None) -> list[str]:
    """The run's overrides plus the deployment's `weights` parameter (a trained checkpoint
    folder, RUN_DIR/checkpoints/step-XXXXXX) as `colorize.weights`, which wins."""
    return [*(overrides or []), *([f"colorize.weights={weights}"] if weights else [])]


def _colorize(source: str, refs: str, out: str | None, config_path: str | None, overrides: list[str] | None,
              kind: str) -> State:
    forward_chromaflow_logs()
    try:
        config = load_config(config_path, overrides)
        source_path = check_job_inputs(source, refs, config, kind)
        root, _ = job_folder(source_path, out, config)
        with job_lock(root):  # nothing is created before the inputs are checked
            job = write_job_info(source_path, refs, out, config, kind)
            summary = run_pipeline(job, config)  # a source that turns out unreadable in ingest, too
    except (*INPUT_ERRORS, JobLocked, DiskFull) as exc:  # DiskFull: what was written stays; rerun finishes
        return input_error_state(exc)
    return summary.final_state()


def job_run_name() -> str:
    """`<job name>-<job id>`, from the run's parameters (before the run has made anything)."""
    params = flow_run.parameters
    source = Path(str(params.get("source", "job"))).resolve()
    try:
        root, name = job_folder(source, params.get("out"), load_config(params.get("config_path"),
                                                                       params.get("overrides")))
    except Exception:  # a bad config: the run itself reports it
        root, name = job_folder(source, params.get("out"), Config())
    return f"{name}-{job_id(root)}"


def rerun_run_name() -> str:
    root = Path(str(flow_run.parameters.get("out", "job"))).resolve()
    try:
        name = JobDir.open(root).name
    except (OSError, ValueError, KeyError):
        name = safe_job_name(root.name)
    return f"rerun-{name}-{job_id(root)}"


# The docstrings are the deployment form's help: description and one line per parameter.
@flow(name="colorize-chapter", flow_run_name=job_run_name, log_prints=True)
def colorize_chapter(source: str, refs: str, out: str | None = None, config_path: str | None = None,
                     overrides: list[str] | None = None, weights: str | None = None) -> dict:
    """Colorize a manga chapter: a folder of pages, a .cbz/.zip or one image.

    Args:
        source: The chapter: a folder of page images (natural order: p2 before p10), a .cbz/.zip
            archive or one image.
        refs: Reference folder: refs/<identity>/*.png are ID pools (one character each), refs/*.png
            the unnamed pool.
        out: Job folder (created; an earlier run's folder is resumed). Default: ./chromaflow-out/<name>.
        config_path: YAML config merged over conf/default.yaml.
        overrides: Config overrides, e.g. ["job.shard_size=8", "ray.num_actors=4"].
        weights: A trained ColorFlow checkpoint folder (RUN_DIR/checkpoints/step-XXXXXX from
            train-colorizer) for the diffusion backend: sets colorize.weights.
    """
    return _colorize(source, refs, out, config_path, with_weights(overrides, weights), CHAPTER)


@flow(name="colorize-episode", flow_run_name=job_run_name, log_prints=True)
def colorize_episode(source: str, refs: str, out: str | None = None, config_path: str | None = None,
                     overrides: list[str] | None = None, weights: str | None = None) -> dict:
    """Colorize an anime episode (a video file), frame by frame with scene ids.

    Args:
        source: The episode: a video file (.mp4, .mkv, .mov, ...).
        refs: Reference folder: refs/<identity>/*.png are ID pools (one character each), refs/*.png
            the unnamed pool.
        out: Job folder (created; an earlier run's folder is resumed). Default: ./chromaflow-out/<name>.
        config_path: YAML config merged over conf/default.yaml.
        overrides: Config overrides, e.g. ["job.shard_size=8", "ingest.video_stride=2"].
        weights: A trained ColorFlow checkpoint folder (RUN_DIR/checkpoints/step-XXXXXX from
            train-colorizer) for the diffusion backend: sets colorize.weights.
    """
    return _colorize(source, refs, out, config_path, with_weights(overrides, weights), EPISODE)


@flow(name="rerun-failed-shards", flow_run_name=rerun_run_name, log_prints=True)
def rerun_failed_shards(out: str) -> dict:
    """Finish an existing job: redo failed, missing or stale (shard, stage) pairs and what depends on them.

    Args:
        out: The job folder of an earlier colorize run (it holds job.json).
    """
    forward_chromaflow_logs()
    try:
        job = JobDir.open(out)
        config = Config.model_validate(job.read_info()["config"])
    except (OSError, ValueError, KeyError) as exc:
        return input_error_state(OutFolderError(f"{out}: not a usable chromaflow job folder ({exc})"))
    try:
        with job_lock(job.root):
            plan = plan_rerun(job, config)
            redo = [label for kind in ("failed", "missing", "stale", "downstream") for label in plan[kind]]
            get_run_logger().info(
                "%s: redoing up to %d (shard, stage) pairs (%d failed, %d missing, %d stale for the current inputs "
                "or config, %d after those), reusing %d%s", job.name, len(redo), len(plan["failed"]),
                len(plan["missing"]), len(plan["stale"]), len(plan["downstream"]), len(plan["reused"]),
                (": " + ", ".join(redo[:20]) + (", ..." if len(redo) > 20 else "")) if redo else "")
            summary = run_pipeline(job, config)
    except (*INPUT_ERRORS, JobLocked, DiskFull) as exc:
        return input_error_state(exc)
    return summary.final_state()


def colorize(source: str, refs: str, out: str | None = None, config_path: str | None = None,
             overrides: list[str] | None = None, weights: str | None = None) -> dict:
    """Pick the chapter or episode flow from the source type."""
    kind = source_kind(source)
    flow_fn = colorize_episode if kind == EPISODE else colorize_chapter
    return flow_fn(source=source, refs=refs, out=out, config_path=config_path, overrides=overrides, weights=weights)


__all__ = ["colorize", "colorize_chapter", "colorize_episode", "rerun_failed_shards", "run_pipeline",
           "prepare_job", "check_job_inputs", "job_folder", "JobIncomplete"]
