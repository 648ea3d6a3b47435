"""The `chromaflow` command.

    chromaflow colorize SOURCE --refs DIR --out DIR [--config FILE] [--set key=value ...] [--wait]
    chromaflow rerun OUT_DIR [--wait]
    chromaflow status OUT_DIR
    chromaflow serve [--inbox DIR --refs DIR --out-root DIR (--cron EXPR | --interval SECONDS)]
    chromaflow evaluate DATASET --out DIR [--backend NAME ...] [--styles line,gray,tone] [--warp] [--framing] [--balloons]
    chromaflow index REFS --out INDEX_DIR
    chromaflow convert-weights SRC DST
    chromaflow build-training-set SRC --out DATA
    chromaflow train-colorizer DATA --out RUN_DIR     (and train-guided-sr)

Exit codes: 0 done, 1 finished with failed pages/shards (summary printed) or stopped by a
full disk (one line naming the file; rerun after freeing space), 2 bad input or
configuration (one line naming the file or key), or the job folder is in use by another
run (its pid and start time; --wait waits for it instead).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Colorize manga chapters and anime episodes from colored reference pools.")
console = Console(stderr=True)

def _user_errors() -> tuple[type[Exception], ...]:
    from chromaflow.conf import ConfigError
    from chromaflow.flows.summary import OutFolderError
    from chromaflow.models.palette_memory import PaletteMemoryError
    from chromaflow.retrieval.references import ReferenceFolderError
    from chromaflow.retrieval.store_format import StoreError
    from chromaflow.storage.eval_dataset import EvalDatasetError
    from chromaflow.storage.images import ImageError
    from chromaflow.storage.job import JobLocked
    from chromaflow.storage.sources import SourceError

    return (ConfigError, SourceError, ReferenceFolderError, ImageError, EvalDatasetError, StoreError,
            PaletteMemoryError, FileNotFoundError, JobLocked, OutFolderError)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class _ProgressWatcher:
    """Rich progress bars fed by the job folder's stats files (they are the truth, and
    the flow may run stages on Ray workers we do not hear from directly)."""

    def __init__(self, job_root: Path):
        self.job_root = job_root
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if sys.stderr.isatty():
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        from chromaflow.stages.registry import SHARD_SETS
        from chromaflow.storage.job import JobDir
        from chromaflow.storage.manifest import manifest_rows

        with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            bars = {stage: progress.add_task(stage, total=None) for stage in SHARD_SETS}
            while not self._stop.wait(0.5):
                try:
                    job = JobDir.open(self.job_root)
                    rows = manifest_rows(job, SHARD_SETS)
                except (FileNotFoundError, KeyError, ValueError):
                    continue
                shards = job.num_shards()
                for stage in SHARD_SETS:
                    done = sum(1 for r in rows if r["stage"] == stage and r["status"] in ("ok", "partial", "failed"))
                    progress.update(bars[stage], total=shards or None, completed=done)


def _print_result(summary: dict) -> None:
    console.print(f"[green]done:[/green] {len(summary['pages'])}/{summary['num_items']} pages · "
                  f"{summary['computed']} shard-stages computed, {summary['cached']} reused")
    for key, value in summary["outputs"].items():
        console.print(f"  {key}: {value}")
    console.print(f"  report: {summary['report']}")


def _run_job(run) -> None:
    from chromaflow.flows.summary import JobIncomplete
    from chromaflow.storage.atomic import DiskFull

    try:
        summary = run()
    except JobIncomplete as exc:
        console.print(f"[yellow]incomplete:[/yellow] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except DiskFull as exc:  # what was written stays; a rerun after freeing space finishes
        _fail(str(exc), code=1)
    except _user_errors() as exc:
        _fail(str(exc))
    _print_result(summary)


def _holding_job_lock(out: Path, wait: bool):
    """The job folder's lock for the whole command (the flow's own hold, in this thread,
    is shared): another run on it is an error at once (exit 2), or waited for with --wait."""
    from chromaflow.storage.job import job_lock

    def waiting(holder: str) -> None:
        console.print(f"waiting for the run holding {out} ({holder})", highlight=False, soft_wrap=True)

    return job_lock(out, wait=wait, on_wait=waiting)


@app.command()
def colorize(
    source: Path = typer.Argument(..., help="Chapter (folder, .cbz/.zip, image) or episode (video file)."),
    refs: Path = typer.Option(..., "--refs", help="Reference folder: refs/<identity>/*.png and refs/*.png."),
    out: Path = typer.Option(..., "--out", help="Job folder (created; reused to resume)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config merged over conf/default.yaml."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set colorize.work_size=768"),
    wait: bool = typer.Option(False, "--wait", help="If another run is writing OUT, wait for it instead of failing."),
) -> None:
    """Colorize a chapter or an episode."""
    from chromaflow.conf import load_config
    from chromaflow.flows.colorize import check_job_folder, check_job_inputs, colorize as run_colorize, job_folder
    from chromaflow.storage.sources import source_kind

    # Everything the run would refuse is refused here, before a flow run or OUT exists.
    try:
        cfg = load_config(config, set_)
        source_path = check_job_inputs(str(source), str(refs), cfg, source_kind(source))
        check_job_folder(*job_folder(source_path, str(out), cfg))
        with _holding_job_lock(out, wait), _ProgressWatcher(out.resolve()):
            _run_job(lambda: run_colorize(str(source), str(refs), str(out), str(config) if config else None, set_))
    except _user_errors() as exc:
        _fail(str(exc))


@app.command()
def rerun(out: Path = typer.Argument(..., help="An existing job folder."),
          wait: bool = typer.Option(False, "--wait", help="If another run is writing OUT, wait for it.")) -> None:
    """Finish a job: redo only failed or missing shards (and what depends on them), and
    rebuild any export that is missing or stale."""
    from chromaflow.conf import Config
    from chromaflow.flows.colorize import rerun_failed_shards
    from chromaflow.storage.job import JobDir

    if not (out / "job.json").exists():
        _fail(f"{out}: not a chromaflow job folder (no job.json)")
    try:
        Config.model_validate(JobDir.open(out).read_info()["config"])
    except (OSError, ValueError, KeyError) as exc:
        _fail(f"{out / 'job.json'}: unusable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    try:
        with _holding_job_lock(out, wait), _ProgressWatcher(out.resolve()):
            _run_job(lambda: rerun_failed_shards(out=str(out.resolve())))
    except _user_errors() as exc:
        _fail(str(exc))


@app.command()
def status(out: Path = typer.Argument(..., help="An existing job folder.")) -> None:
    """Per-shard table from the job's stats files (also rewrites manifest.parquet), then the
    exports checked against them. Exit 1 when anything is missing, failed, stale or running."""
    from chromaflow.stages.registry import SHARD_SETS
    from chromaflow.storage.job import JobDir, running_holder
    from chromaflow.storage.manifest import manifest_rows, write_manifest

    if not (out / "job.json").exists():
        _fail(f"{out}: not a chromaflow job folder (no job.json)")
    job = JobDir.open(out)
    # The manifest is rewritten only when no run is writing the folder (one writer per job).
    rows = (write_manifest if running_holder(job.root) is None else manifest_rows)(job, SHARD_SETS)
    stale = _stale_pairs(job)
    colors = {"ok": "green", "partial": "yellow", "failed": "red", "missing": "dim", "stale": "magenta"}
    table = Table(title=f"{job.name} · {job.num_shards()} shards")
    table.add_column("shard")
    for stage in SHARD_SETS:
        table.add_column(stage)
    for shard in range(job.num_shards()):
        cells = []
        for stage in SHARD_SETS:
            row = next(r for r in rows if r["shard"] == shard and r["stage"] == stage)
            state = "stale" if (shard, stage) in stale else row["status"]
            cells.append(f"[{colors[state]}]{state}[/] {row['samples']}")
        table.add_row(f"{shard:06d}", *cells)
    Console().print(table)
    problems = [f"shard {r['shard']:06d} {r['stage']}: {r['error']}" for r in rows if r["error"]]
    problems += [f"shard {shard:06d} {stage}: stale (its inputs changed since it ran)" for shard, stage in sorted(stale)]
    problems += _job_problems(job)
    for line in problems:
        console.print(line, highlight=False, soft_wrap=True)
    incomplete = [r for r in rows if r["status"] in ("failed", "missing")]
    raise typer.Exit(1 if incomplete or problems else 0)


def _stale_pairs(job) -> set[tuple[int, str]]:
    """(shard, stage) whose stats say done but whose inputs have changed since."""
    from chromaflow.conf import Config
    from chromaflow.stages.registry import SHARD_STAGES
    from chromaflow.stages.runner import is_done
    from chromaflow.storage.shards import read_stats

    config = Config.model_validate(job.read_info()["config"])
    return {(shard, stage) for shard in range(job.num_shards()) for stage in SHARD_STAGES
            if read_stats(job, stage, shard) is not None and not is_done(job, stage, shard, config)}


def _job_problems(job) -> list[str]:
    """A run in progress, an unfinished ingest, missing or stale exports: one line each."""
    from chromaflow.stages.export import export_problems
    from chromaflow.storage.job import running_holder

    problems = []
    holder = running_holder(job.root)
    if holder:
        problems.append(f"{job.root}: a run is writing this job now ({holder})")
    if "num_shards" not in job.read_info():
        return problems + [f"{job.root}: ingest has not finished (no shard count yet); run `chromaflow rerun {job.root}`"]
    return problems + export_problems(job)


@app.command()
def serve(
    limit: int = typer.Option(1, help="Flow runs executed at the same time."),
    inbox: Optional[Path] = typer.Option(None, "--inbox", help="Inbox folder of colorize-inbox/default: chapter "
                                         "folders, .cbz/.zip and videos."),
    refs: Optional[Path] = typer.Option(None, "--refs", help="Reference folder for the inbox's chapters."),
    out_root: Optional[Path] = typer.Option(None, "--out-root", help="Jobs go to OUT_ROOT/<chapter name>/."),
    cron: Optional[str] = typer.Option(None, "--cron", help="Run the inbox on this cron schedule, e.g. '0 * * * *'."),
    interval: Optional[float] = typer.Option(None, "--interval", help="Run the inbox every SECONDS."),
    timezone: Optional[str] = typer.Option(None, "--timezone", help="Time zone of --cron (default UTC)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config for the inbox's chapters."),
    set_: list[str] = typer.Option([], "--set", help="Config override for the inbox's chapters."),
) -> None:
    """Serve the deployments (colorize-chapter/default, colorize-episode/default,
    colorize-inbox/default, rerun-failed-shards/default, ...) to the Prefect server at
    PREFECT_API_URL. --inbox/--refs/--out-root set colorize-inbox's parameters and
    --cron/--interval its schedule; schedules already on the server are kept."""
    from prefect.settings import PREFECT_API_URL

    from chromaflow.flows.deployments import inbox_schedule, serve_deployments

    try:
        schedule = inbox_schedule(inbox, refs, out_root, cron, interval, timezone, config, set_)
    except _user_errors() as exc:
        _fail(str(exc))
    if not PREFECT_API_URL.value():
        console.print("[yellow]PREFECT_API_URL is not set: start `prefect server start --host 127.0.0.1` and "
                      "export PREFECT_API_URL=http://127.0.0.1:4200/api[/yellow]")
    serve_deployments(limit=limit, inbox=schedule)


@app.command()
def evaluate(
    dataset: Path = typer.Argument(..., help="Dataset: <identity>/<view>_line.png + <view>_color.png."),
    out: Path = typer.Option(..., "--out"),
    config: Optional[Path] = typer.Option(None, "--config"),
    set_: list[str] = typer.Option([], "--set"),
    backend: list[str] = typer.Option([], "--backend", help="Backends to compare (default: default + baselines)."),
    styles: str = typer.Option("line", "--styles", help="Input styles rendered from the ground truth: "
                               "line,gray,tone (comma-separated)."),
    warp: bool = typer.Option(False, "--warp", help="Also evaluate every page warped with its ground truth."),
    framing: bool = typer.Option(False, "--framing", help="Also evaluate close-up references / close-up pages."),
    balloons: bool = typer.Option(False, "--balloons", help="Also evaluate pages with a lettered speech balloon."),
    clips: Optional[Path] = typer.Option(None, "--clips", help="Episode clips (BasicPBC layout: line/ + gt/ per "
                                         "clip): colored from their first ground-truth frame, color and flicker scored."),
    instances: Optional[Path] = typer.Option(None, "--instances", help="Pages with several characters (pages/ "
                                             "+ refs/, tasks/evaluate_instances.py): instance and identity scores."),
) -> None:
    """Score colorizer backends on a line/color dataset (metrics.json, report.html)."""
    from chromaflow.conf import load_config
    from chromaflow.tasks.evaluate import metrics_table, run_evaluation
    from chromaflow.models.evaluation import Variants

    conditions = ("plain",) + tuple(name for name, on in (("warp", warp), ("framing", framing),
                                                          ("balloons", balloons)) if on)
    try:
        variants = Variants(tuple(s.strip() for s in styles.split(",") if s.strip()), conditions)
    except ValueError as exc:
        _fail(str(exc))
    try:
        cfg = load_config(config, set_)
        metrics = run_evaluation(dataset, out, cfg, backend or None, variants, clips, instances)
    except _user_errors() as exc:
        _fail(str(exc))
    rows = metrics_table(metrics, digits=None)
    table = Table(title=f"evaluation · {dataset}")
    for column in rows[0] if rows else []:
        table.add_column(column)
    for row in rows:
        table.add_row(*("–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    for clip in metrics.get("clips", []):
        console.print(f"clip {clip['clip']}: {clip['frames']} frames, flat-color accuracy "
                      f"{clip.get('flat_color_accuracy', '–')}, flicker {clip.get('flicker', '–')}"
                      + (f" ({clip['flicker_ratio']}× the ground truth's)" if "flicker_ratio" in clip else ""))
    if "instances" in metrics:
        console.print("several characters per page: " + ", ".join(f"{k} {metrics['instances'][k]}" for k in (
            "instance_recall", "instance_identity_accuracy", "flat_color_accuracy", "consistency_de_median")))
    console.print(f"report: {out / 'report.html'}")


@app.command()
def index(
    refs: Path = typer.Argument(..., help="Reference folder."),
    out: Path = typer.Option(..., "--out", help="Index folder (incremental: only new files are embedded)."),
    config: Optional[Path] = typer.Option(None, "--config"),
    set_: list[str] = typer.Option([], "--set"),
) -> None:
    """Build or update a reference index (flow build-reference-index)."""
    from chromaflow.conf import load_config
    from chromaflow.flows.build_index import build_reference_index
    from chromaflow.retrieval.references import scan_reference_folder

    try:
        load_config(config, set_)  # validate before Prefect starts
        scan_reference_folder(refs)
        if out.exists() and not out.is_dir():
            _fail(f"{out}: --out is a file, not an index folder")
    except _user_errors() as exc:
        _fail(str(exc))
    try:
        summary = build_reference_index(str(refs), str(out), str(config) if config else None, set_)
    except _user_errors() as exc:
        _fail(str(exc))
    for problem in summary["skipped"]:
        console.print(f"[yellow]skipped:[/yellow] {problem}", highlight=False, soft_wrap=True)
    console.print(f"index: {out} · {summary['references']} references ({summary['reused_references']} reused) · "
                  f"{summary['patches']} patches · {summary['index_kind']} · identities: "
                  f"{', '.join(summary['identities'])}", highlight=False, soft_wrap=True)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for the demo chapter, refs and job."),
    pages: int = typer.Option(8, "--pages", help="Pages in the demo chapter."),
) -> None:
    """Build a small OpenMoji line-art chapter with ID pools and colorize it."""
    from chromaflow.demo import ATTRIBUTION, build_demo
    from chromaflow.flows.colorize import colorize as run_colorize

    chapter, refs = build_demo(out, num_pages=pages)
    console.print(f"demo chapter: {chapter} ({pages} pages) · references: {refs}")
    console.print(ATTRIBUTION, highlight=False)
    job = out / "job"
    with _ProgressWatcher(job.resolve()):
        _run_job(lambda: run_colorize(str(chapter), str(refs), str(job), None, ["job.shard_size=4"]))
    console.print(f"[bold]open {(job / 'report.html').resolve()}[/bold]")


@app.command("convert-weights")
def convert_weights(src: Path = typer.Argument(...), dst: Path = typer.Argument(...)) -> None:
    """Convert pickled ColorFlow .bin weights to safetensors (weights_only loading)."""
    from chromaflow.models.colorflow.convert import convert_weights as convert

    try:
        report = convert(src, dst)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    console.print(report)


def _training_errors() -> tuple[type[Exception], ...]:
    from chromaflow.models.colorflow.weights import WeightsError
    from chromaflow.training.builders import TrainingSetupError
    from chromaflow.training.dataset import DatasetError

    return (*_user_errors(), DatasetError, TrainingSetupError, WeightsError)


@app.command("build-training-set")
def build_training_set(
    source: Path = typer.Argument(..., help="Colored chapter/episode, or a folder of them (one per subfolder/CBZ/video)."),
    out: Path = typer.Option(..., "--out", help="Training-set folder (created; reused to resume)."),
    config: Optional[Path] = typer.Option(None, "--config"),
    set_: list[str] = typer.Option([], "--set"),
) -> None:
    """Build WebDataset training shards from a colored archive (docs/training.md)."""
    from chromaflow.conf import load_config
    from chromaflow.flows.train import build_training_set as run_build

    try:
        load_config(config, set_)
        summary = run_build(str(source), str(out), str(config) if config else None, set_)
    except _training_errors() as exc:
        _fail(str(exc))
    for problem in summary["skipped"]:
        console.print(f"[yellow]skipped:[/yellow] {problem}", highlight=False, soft_wrap=True)
    console.print(f"training set: {out} · {summary['splits']} pages · {summary['shards']} shards "
                  f"({summary['reused_shards']} reused)", highlight=False)


def _train_command(kind: str, data: Path, out: Path, config: Optional[Path], set_: list[str]) -> None:
    from chromaflow.conf import load_config
    from chromaflow.flows.train import train_colorizer, train_guided_sr
    from chromaflow.training.ray_train import TrainingError

    flow_fn = train_colorizer if kind == "colorizer" else train_guided_sr
    try:
        load_config(config, set_)
        summary = flow_fn(str(data), str(out), str(config) if config else None, set_)
    except _training_errors() as exc:
        _fail(str(exc))
    except TrainingError as exc:
        _fail(str(exc), code=1)
    console.print(f"train-{kind}: {summary['steps']} steps · loss {summary['first_loss']:.4f} -> "
                  f"{summary['last_loss']:.4f} · checkpoint {summary['checkpoint']}", highlight=False)


@app.command("train-colorizer")
def train_colorizer(data: Path = typer.Argument(..., help="Training-set folder (build-training-set)."),
                    out: Path = typer.Option(..., "--out", help="Run folder (resumes from its newest checkpoint)."),
                    config: Optional[Path] = typer.Option(None, "--config"),
                    set_: list[str] = typer.Option([], "--set")) -> None:
    """Fine-tune ColorFlow's ColorGuider + UNet LoRA on Ray Train."""
    _train_command("colorizer", data, out, config, set_)


@app.command("train-guided-sr")
def train_guided_sr(data: Path = typer.Argument(..., help="Training-set folder (build-training-set)."),
                    out: Path = typer.Option(..., "--out", help="Run folder (resumes from its newest checkpoint)."),
                    config: Optional[Path] = typer.Option(None, "--config"),
                    set_: list[str] = typer.Option([], "--set")) -> None:
    """Train ColorFlow's guided super-resolution fusion module (GSRP) on Ray Train."""
    _train_command("guided-sr", data, out, config, set_)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
