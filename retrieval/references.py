"""Reference folders: `refs/<identity>/*.png` are ID pools, `refs/*.png` the unnamed pool."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from chromaflow.storage.sources import IMAGE_SUFFIXES, natural_key

log = logging.getLogger(__name__)

UNNAMED = ""


class ReferenceFolderError(ValueError):
    """The refs folder is missing, unreadable or holds no images."""


@dataclass(frozen=True)
class ReferenceEntry:
    identity: str  # "" for the unnamed pool
    path: Path
    name: str  # path relative to the refs folder, posix style


def scan_reference_folder(refs_dir: str | Path) -> list[ReferenceEntry]:
    root = Path(refs_dir)
    if not root.exists():
        raise ReferenceFolderError(f"{root}: reference folder does not exist")
    if not root.is_dir():
        raise ReferenceFolderError(f"{root}: reference path is not a folder")
    entries: list[ReferenceEntry] = []
    for path in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            for file in sorted(path.rglob("*"), key=lambda p: natural_key(str(p.relative_to(path)))):
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith("."):
                    entries.append(ReferenceEntry(path.name, file, file.relative_to(root).as_posix()))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            entries.append(ReferenceEntry(UNNAMED, path, path.name))
    if not entries:
        raise ReferenceFolderError(f"{root}: reference folder holds no images (.png/.jpg/.webp/...)")
    return entries
