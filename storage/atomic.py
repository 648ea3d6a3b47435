"""Atomic file writes: write a temp file beside the target, fsync, rename over it.

A reader (or a resumed run after SIGKILL) therefore sees either the old file or the
complete new one, never a torn write. Leftover temp files carry TMP_MARK in their name
and are swept by `remove_stale_temp_files` (only by the run holding the job's lock).

A full disk (ENOSPC, EDQUOT) raises `DiskFull`: one line naming the file, the space the
write needed and what is free. The temp file is removed, every finished file stays, so a
rerun after freeing space continues where the job stopped. Retrying does not help: the
stages and the pool fail the job at once on it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TMP_MARK = ".chromaflow-tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """No space left for an output file; str() is one line naming the file and the space."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(errno.ENOSPC, message, path)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # crosses process boundaries (Ray actors, Prefect results)
        return (DiskFull, (self.message, self.filename or ""))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def disk_full(target: Path, expected: int, written: int) -> DiskFull:
    """The one-line error for a write to target that found no space after `written` bytes
    (`expected`: the file's size when the writer knew it, else 0)."""
    try:
        free = human_bytes(shutil.disk_usage(target.parent).free)
    except OSError:
        free = "unknown"
    need = human_bytes(expected) if expected > written else f"more than {human_bytes(written)}"
    return DiskFull(f"{target}: no space left on device (this file needs {need}, "
                    f"{free} free there); free some space and run `chromaflow rerun` on the job folder",
                    str(target))


@contextmanager
def atomic_path(target: str | Path, expected_bytes: int = 0) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success it is renamed to target.
    expected_bytes (when known) is what a full disk's message says the file needs."""
    target = Path(target)
    tmp_path = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_MARK + target.name + ".", dir=target.parent)
        tmp_path = Path(tmp)
        # mkstemp makes owner-only files; outputs get the usual umask-based permissions.
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS or isinstance(exc, DiskFull):
            raise
        written = tmp_path.stat().st_size if tmp_path is not None and tmp_path.exists() else 0
        raise disk_full(target, expected_bytes, written) from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target, len(data)) as tmp:
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
