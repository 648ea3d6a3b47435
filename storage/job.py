"""The job directory: where every stage of one chapter/episode run lives.

    OUT/
      job.json                         source, refs, kind, resolved config, shard count
      ingest/{job}-{shard:06d}.tar     WebDataset shards, one set per shard stage
      ingest/{job}-{shard:06d}.stats.json   written last: the shard is done
      ingest/{job}-{shard:06d}.failed.json  the shard failed (error, attempts)
      lines/ retrieve/ colorize/ upscale/   same layout per stage (stages/registry.py)
      references/                      the reference store and index of this job
      palette_memory.json              each identity's remembered colors
      manifest.parquet                 one row per (shard, stage), rebuilt from stats files
      pages/ chapter.cbz | episode.mp4 report.html
      export.json                      what the exports were built from (stages/export.py)
      .lock                            held (flock) by the one run writing this folder

docs/storage.md documents the format.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .atomic import write_json

LOCK_NAME = ".lock"

def safe_job_name(text: str) -> str:
    """Dot-free, filesystem-safe job name (WebDataset splits keys at the first dot)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    return name[:64] or "job"


@dataclass(frozen=True)
class JobDir:
    root: Path
    name: str

    def __post_init__(self) -> None:
        # Always absolute: job roots end up in file URIs, Ray actors (another cwd) and job.json.
        object.__setattr__(self, "root", Path(os.path.abspath(self.root)))

    @classmethod
    def open(cls, root: str | Path) -> "JobDir":
        root = Path(root)
        info = json.loads((root / "job.json").read_text())
        return cls(root, info["name"])

    @property
    def job_json(self) -> Path:
        return self.root / "job.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def references(self) -> Path:
        return self.root / "references"

    @property
    def palette_memory(self) -> Path:
        """Each identity's remembered colors (models/palette_memory.py), built before colorizing."""
        return self.root / "palette_memory.json"

    @property
    def pages(self) -> Path:
        return self.root / "pages"

    @property
    def export_state(self) -> Path:
        """What pages/, the cbz/mp4 and report.html were built from (stages/export.py)."""
        return self.root / "export.json"

    def stage_dir(self, stage: str) -> Path:
        """The shard set of a stage (stages/registry.py names them)."""
        if not re.fullmatch(r"[a-z_]+", stage):
            raise ValueError(f"not a stage name: {stage!r}")
        return self.root / stage

    def _base(self, stage: str, shard: int) -> Path:
        return self.stage_dir(stage) / f"{self.name}-{shard:06d}"

    def shard_path(self, stage: str, shard: int) -> Path:
        return self._base(stage, shard).with_suffix(".tar")

    def stats_path(self, stage: str, shard: int) -> Path:
        return self._base(stage, shard).with_suffix(".stats.json")

    def failed_path(self, stage: str, shard: int) -> Path:
        return self._base(stage, shard).with_suffix(".failed.json")

    def read_info(self) -> dict[str, Any]:
        return json.loads(self.job_json.read_text())

    def write_info(self, info: dict[str, Any]) -> None:
        write_json(self.job_json, info)

    def num_shards(self) -> int:
        return int(self.read_info().get("num_shards") or 0)


# --- one writer per job folder -----------------------------------------------------------

class JobLocked(RuntimeError):
    """Another run holds the job folder; str() is one line naming the holder."""


# Locks this process holds: {lock path: [fd, owning thread, depth]}. A nested job_lock in the
# thread that holds it (the CLI around the flow it calls) shares the hold.
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


def lock_holder(root: str | Path) -> str:
    """Who holds (or last held) OUT/.lock, as the holder wrote it: "pid N on HOST, started ..."."""
    try:
        info = json.loads((Path(root) / LOCK_NAME).read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started_at"]))
        return f"pid {info['pid']} on {info['host']}, started {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


@contextmanager
def job_lock(root: str | Path, wait: bool = False,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock of a job folder (flock on OUT/.lock, created with the folder)
    for the duration of the block. The kernel drops it when the holder dies, even by kill -9,
    so a stale lock never needs cleaning. Held elsewhere: JobLocked at once, or with wait=True
    block until it is free (on_wait gets the holder's description first)."""
    root = Path(os.path.realpath(root))  # one key per folder, however it is spelled
    path = str(root / LOCK_NAME)
    me = threading.get_ident()
    with _HELD_GUARD:
        held = _HELD.get(path)
        if held is not None and held[1] == me:
            held[2] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[path][2] -= 1
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(root)
            if not wait:
                raise JobLocked(f"{root}: another chromaflow run is writing this job folder ({holder}); "
                                f"wait for it to finish or pass --wait") from None
            if on_wait:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time(),
                "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        with _HELD_GUARD:
            _HELD[path] = [fd, me, 1]
        try:
            yield
        finally:
            with _HELD_GUARD:
                del _HELD[path]
    finally:
        os.close(fd)  # releases the flock


def holds_job_lock(root: str | Path) -> bool:
    """Whether this thread holds the job folder's lock (the temp sweep runs only then)."""
    held = _HELD.get(str(Path(os.path.realpath(root)) / LOCK_NAME))
    return held is not None and held[1] == threading.get_ident()


def running_holder(root: str | Path) -> str | None:
    """The holder of a job folder's lock while a run holds it, else None. Creates nothing."""
    path = Path(root) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock_holder(root)
    finally:
        os.close(fd)
    return None
