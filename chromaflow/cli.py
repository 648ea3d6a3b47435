"""The `chromaflow` command.

    chromaflow colorize SOURCE --refs DIR --out DIR [--config FILE] [--set key=value ...]
    chromaflow rerun OUT_DIR
    chromaflow status OUT_DIR
    chromaflow serve
    chromaflow evaluate DATASET --out DIR [--backend NAME ...] [--styles line,gray,tone] [--warp] [--framing] [--balloons]
    chromaflow index REFS --out INDEX_DIR
    chromaflow convert-weights SRC DST
    chromaflow build-training-set SRC --out DATA
    chromaflow train-colorizer DATA --out RUN_DIR     (and train-guided-sr)

Exit codes: 0 done, 1 finished with failed pages/shards (summary printed), 2 bad input
or configuration (one line naming the file or key).
"""

from __future__ import annotations

import os
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
    from chromaflow.models.palette_memory import PaletteMemoryError
    from chromaflow.retrieval.references import ReferenceFolderError
    from chromaflow.retrieval.store_format import StoreError
    from chromaflow.storage.eval_dataset import EvalDatasetError
    from chromaflow.storage.images import ImageError
    from chromaflow.storage.sources import SourceError

    return (ConfigError, SourceError, ReferenceFolderError, ImageError, EvalDatasetError, StoreError,
            PaletteMemoryError, FileNotFoundError)


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

    try:
        summary = run()
    except JobIncomplete as exc:
        console.print(f"[yellow]incomplete:[/yellow] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except _user_errors() as exc:
        _fail(str(exc))
    _print_result(summary)


@app.command()
def colorize(
    source: Path = typer.Argument(..., help="Chapter (folder, .cbz/.zip, image) or episode (video file)."),
    refs: Path = typer.Option(..., "--refs", help="Reference folder: refs/<identity>/*.png and refs/*.png."),
    out: Path = typer.Option(..., "--out", help="Job folder (created; reused to resume)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config merged over conf/default.yaml."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set colorize.work_size=768"),
) -> None:
    """Colorize a chapter or an episode."""
    from chromaflow.conf import load_config
    from chromaflow.flows.colorize import colorize as run_colorize

    try:
        load_config(config, set_)  # validate before Prefect/Ray start
    except _user_errors() as exc:
        _fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    with _ProgressWatcher(out.resolve()):
        _run_job(lambda: run_colorize(str(source), str(refs), str(out), str(config) if config else None, set_))


@app.command()
def rerun(out: Path = typer.Argument(..., help="An existing job folder.")) -> None:
    """Finish a job: redo only failed or missing shards (and what depends on them)."""
    from chromaflow.flows.colorize import rerun_failed_shards

    if not (out / "job.json").exists():
        _fail(f"{out}: not a chromaflow job folder (no job.json)")
    with _ProgressWatcher(out.resolve()):
        _run_job(lambda: rerun_failed_shards(out=str(out)))


@app.command()
def status(out: Path = typer.Argument(..., help="An existing job folder.")) -> None:
    """Per-shard status table from the job's stats files (also rewrites manifest.parquet)."""
    from chromaflow.stages.registry import SHARD_SETS
    from chromaflow.storage.job import JobDir
    from chromaflow.storage.manifest import write_manifest

    if not (out / "job.json").exists():
        _fail(f"{out}: not a chromaflow job folder (no job.json)")
    job = JobDir.open(out)
    rows = write_manifest(job, SHARD_SETS)
    colors = {"ok": "green", "partial": "yellow", "failed": "red", "missing": "dim"}
    table = Table(title=f"{job.name} · {job.num_shards()} shards")
    table.add_column("shard")
    for stage in SHARD_SETS:
        table.add_column(stage)
    for shard in range(job.num_shards()):
        cells = []
        for stage in SHARD_SETS:
            row = next(r for r in rows if r["shard"] == shard and r["stage"] == stage)
            cells.append(f"[{colors[row['status']]}]{row['status']}[/] {row['samples']}")
        table.add_row(f"{shard:06d}", *cells)
    Console().print(table)
    problems = [r for r in rows if r["error"]]
    for row in problems:
        console.print(f"shard {row['shard']:06d} {row['stage']}: {row['error']}", highlight=False)
    incomplete = [r for r in rows if r["status"] in ("failed", "missing")]
    raise typer.Exit(1 if incomplete or problems else 0)


@app.command()
def serve(limit: int = typer.Option(1, help="Flow runs executed at the same time.")) -> None:
    """Serve the deployments (colorize-chapter/default, colorize-episode/default,
    rerun-failed-shards/default, ...) to a Prefect server at PREFECT_API_URL."""
    from chromaflow.flows.deployments import serve_deployments

    if not os.environ.get("PREFECT_API_URL"):
        console.print("[yellow]PREFECT_API_URL is not set: start `prefect server start --host 127.0.0.1` and "
                      "export PREFECT_API_URL=http://127.0.0.1:4200/api[/yellow]")
    serve_deployments(limit=limit)


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
) -> None:
    """Score colorizer backends on a line/color dataset (metrics.json, report.html)."""
    from chromaflow.conf import load_config
    from chromaflow.flows.evaluate import run_evaluation
    from chromaflow.models.evaluation import Variants

    conditions = ("plain",) + tuple(name for name, on in (("warp", warp), ("framing", framing),
                                                          ("balloons", balloons)) if on)
    try:
        variants = Variants(tuple(s.strip() for s in styles.split(",") if s.strip()), conditions)
    except ValueError as exc:
        _fail(str(exc))
    try:
        cfg = load_config(config, set_)
        metrics = run_evaluation(dataset, out, cfg, backend or None, variants)
    except _user_errors() as exc:
        _fail(str(exc))
    table = Table(title=f"evaluation · {dataset}")
    keys = ["flat_color_accuracy", "background_accuracy", "segment_accuracy", "segment_pixel_accuracy",
            "balloon_paper", "lettering_black", "style_detected", "pairs"]
    table.add_column("backend")
    table.add_column("variant")
    for key in keys:
        table.add_column(key)
    for name, per_variant in metrics["variants"].items():
        for variant, values in per_variant.items():
            table.add_row(name, variant, *(f"{values[k]:.3f}" if isinstance(values.get(k), float)
                                           else str(values.get(k, "–")) for k in keys))
    Console().print(table)
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

    try:
        load_config(config, set_)  # validate before Prefect starts
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
