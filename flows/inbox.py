"""Flow `colorize-inbox`: colorize whatever new arrived in an inbox folder (the scheduled job).

    INBOX/ch012/            a chapter folder          ─▶ OUT_ROOT/ch012/
    INBOX/ch013.cbz         a chapter archive         ─▶ OUT_ROOT/ch013/
    INBOX/ep07.mp4          an episode                ─▶ OUT_ROOT/ep07/

Each entry without a finished job under OUT_ROOT (flows/job_state.py) is colorized as its own
flow run, a subflow named after the chapter (`ch013-<job id>`), one after the other; finished
ones are skipped, incomplete ones (never finished, failed shards, source or config changed)
run again and reuse what they finished. Loose images and other files are not chapters and
are ignored.

Subflows rather than `run_deployment`: the chapters share the one actor pool (on a GPU host,
the GPU), so they run one at a time in this run's process, with Ray started once for all of
them, and a `chromaflow serve --limit 1` has the one slot it needs; each chapter's run is
still its own run in the UI (linked to this one), with its own logs, state and artifacts. The
deployment's concurrency limit of 1 (flows/deployments.py, prefect.yaml) cancels a tick that
comes while the previous one is still working through the inbox.

A chapter whose job folder another run is writing (a CLI `colorize`/`rerun` holding its lock)
is left for the next pass, not failed. The run ends Completed ("2 colorized, 3 finished
earlier"), or Failed naming the chapters
that finished with problems ("2 colorized (1 with problems: ch013), 3 finished earlier";
their own runs say which pages and why).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ray
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from chromaflow.conf import Config, load_config
from chromaflow.flows.colorize import colorize_chapter, colorize_episode, with_weights
from chromaflow.flows.job_state import FINISHED, job_state
from chromaflow.flows.run_log import forward_chromaflow_logs
from chromaflow.flows.summary import INPUT_ERRORS, JobIncomplete, OutFolderError, input_error_state
from chromaflow.retrieval.references import scan_reference_folder
from chromaflow.stages.pool import ensure_ray
from chromaflow.storage.job import running_holder, safe_job_name
from chromaflow.storage.sources import ARCHIVE_SUFFIXES, CHAPTER, EPISODE, VIDEO_SUFFIXES, natural_key


@dataclass(frozen=True)
class InboxEntry:
    name: str  # job name: OUT_ROOT/<name>/
    path: Path
    kind: str  # chapter | episode


BUSY = "busy"  # an entry whose job folder another run holds (its lock): left for the next pass


def scan_inbox(inbox: Path) -> tuple[list[InboxEntry], list[str]]:
    """Chapters and episodes in the inbox, in natural order, and one line per entry left out."""
    entries, ignored, seen = [], [], {}
    for path in sorted(inbox.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        if path.is_dir() or suffix in ARCHIVE_SUFFIXES:
            kind = CHAPTER
        elif suffix in VIDEO_SUFFIXES:
            kind = EPISODE
        else:
            ignored.append(f"{path}: not a chapter (folder, .cbz/.zip) or an episode (video), ignored")
            continue
        name = safe_job_name(path.stem if path.is_file() else path.name)
        if name in seen:
            ignored.append(f"{path}: its job folder {name}/ is taken by {seen[name].name}, ignored")
            continue
        seen[name] = path
        entries.append(InboxEntry(name, path, kind))
    return entries, ignored


def chapter_overrides(overrides: list[str] | None, entry: InboxEntry) -> list[str]:
    return [*(overrides or []), f"job.name={entry.name}"]


def inbox_run_name() -> str:
    return f"inbox-{safe_job_name(Path(str(flow_run.parameters.get('inbox', 'inbox'))).name)}"


@flow(name="colorize-inbox", flow_run_name=inbox_run_name, log_prints=True)
def colorize_inbox(inbox: str, refs: str, out_root: str, config_path: str | None = None,
                   overrides: list[str] | None = None, weights: str | None = None) -> dict:
    """Colorize every chapter or episode in an inbox folder that has no finished job yet.

    Args:
        inbox: Folder to scan: chapter folders, .cbz/.zip archives and video files, one job each.
        refs: Reference folder shared by the inbox: refs/<identity>/*.png ID pools, refs/*.png.
        out_root: Where the jobs go: OUT_ROOT/<chapter name>/ (a finished one is skipped next time).
        config_path: YAML config merged over conf/default.yaml, for every chapter.
        overrides: Config overrides for every chapter, e.g. ["job.shard_size=8"].
        weights: A trained ColorFlow checkpoint folder (RUN_DIR/checkpoints/step-XXXXXX) for the
            diffusion backend, for every chapter: sets colorize.weights.
    """
    forward_chromaflow_logs()
    overrides = with_weights(overrides, weights)
    logger = get_run_logger()
    try:
        config = load_config(config_path, overrides)
        inbox_path, out_path = Path(inbox).resolve(), Path(out_root).resolve()
        if not inbox_path.is_dir():
            raise OutFolderError(f"{inbox_path}: inbox folder does not exist")
        scan_reference_folder(refs)
        entries, ignored = scan_inbox(inbox_path)
    except INPUT_ERRORS as exc:
        return input_error_state(exc)
    for line in ignored:
        logger.info(line)
    states = {e.name: job_state(out_path / e.name, e.path, load_config(config_path, chapter_overrides(overrides, e)))
              for e in entries}
    todo = [e for e in entries if states[e.name][0] != FINISHED]
    logger.info("%s: %d chapters/episodes, %d finished earlier, %d to colorize%s", inbox_path, len(entries),
                len(entries) - len(todo), len(todo),
                (": " + ", ".join(f"{e.name} ({states[e.name][1]})" for e in todo)) if todo else "")
    results = _run_chapters(todo, refs, out_path, config, config_path, overrides)
    rows = [{"chapter": e.name, "source": str(e.path), "before": states[e.name][1],
             "this run": results.get(e.name, ("skipped", ""))[0], "message": results.get(e.name, ("", ""))[1]}
            for e in entries]
    create_table_artifact(rows or [{"chapter": "", "source": str(inbox_path), "before": "", "this run": "empty inbox",
                                    "message": ""}],
                          key=f"inbox-{safe_job_name(inbox_path.name).lower().replace('_', '-')}"[:100],
                          description=f"{inbox_path}: chapters and what this run did")
    return _inbox_state(entries, results)


def _run_chapters(todo: list[InboxEntry], refs: str, out_path: Path, config: Config, config_path: str | None,
                  overrides: list[str] | None) -> dict[str, tuple[str, str]]:
    """Each chapter as a subflow, one after the other: {name: (state name, message)}."""
    results, runnable = {}, []
    for entry in todo:
        holder = running_holder(out_path / entry.name)
        if holder:  # a CLI run or another inbox run is writing it: not a failure, the next pass sees it
            results[entry.name] = (BUSY, f"another run holds its job folder ({holder})")
            get_run_logger().info("%s: %s; left for the next pass", entry.name, results[entry.name][1])
        else:
            runnable.append(entry)
    # One Ray start for every chapter of this run (each chapter's pool finds it running); from
    # this thread, where the subflows run (see run_pipeline on why the thread matters).
    started_ray = ensure_ray(config) if runnable else False
    try:
        for entry in runnable:
            flow_fn = colorize_episode if entry.kind == EPISODE else colorize_chapter
            state = flow_fn(source=str(entry.path), refs=refs, out=str(out_path / entry.name), config_path=config_path,
                            overrides=chapter_overrides(overrides, entry), return_state=True)
            results[entry.name] = ("completed" if state.is_completed() else state.name.lower(), state.message or "")
    finally:
        if started_ray:
            ray.shutdown()
    return results


def _inbox_state(entries: list[InboxEntry], results: dict[str, tuple[str, str]]) -> State:
    busy = [name for name, (state, _) in results.items() if state == BUSY]
    colorized = [name for name in results if name not in busy]
    failed = [name for name in colorized if results[name][0] != "completed"]
    problems = f" ({len(failed)} with problems: {', '.join(failed)})" if failed else ""
    line = f"{len(colorized)} colorized{problems}, {len(entries) - len(results)} finished earlier"
    if busy:
        line += f", {len(busy)} busy in another run ({', '.join(busy)})"
    data = {"chapters": len(entries), "colorized": colorized, "failed": failed, "busy": busy}
    if failed:
        return Failed(message=line, data=JobIncomplete(line, data))
    return Completed(message=line, data=data)
