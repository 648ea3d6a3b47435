"""Atomic file writes: write a temp file beside the target, fsync, rename over it.

A reader (or a resumed run after SIGKILL) therefore sees either the old file or the
complete new one, never a torn write. Leftover temp files carry TMP_MARK in their name
and are swept by `remove_stale_temp_files`.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TMP_MARK = ".chromaflow-tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success it is renamed to target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_MARK + target.name + ".", dir=target.parent)
    # mkstemp makes owner-only files; outputs get the usual umask-based permissions.
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | Path, obj: Any) -> None:
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def remove_stale_temp_files(root: str | Path) -> int:
    """Delete temp files left by a killed run. Returns how many were removed."""
    removed = 0
    for path in Path(root).rglob(TMP_MARK + "*"):
        if path.is_file():
            path.unlink()
            removed += 1
    return removed
