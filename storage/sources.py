"""Source readers: a chapter (folder of images, .cbz/.zip, one image) or an episode (a
video, read by storage/video.py).

Readers only read. Archives are never extracted to disk: entries are read into memory,
and entries whose names try to leave the archive (`../`, absolute paths) are refused.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}
ARCHIVE_SUFFIXES = {".cbz", ".zip"}
CHAPTER, EPISODE = "chapter", "episode"


class SourceError(ValueError):
    """The source as a whole cannot be read (missing, unknown type, broken video)."""


def natural_key(text: str) -> list:
    """Sort key that orders 'p2' before 'p10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def source_kind(path: str | Path) -> str:
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: source does not exist")
    if p.is_dir():
        return CHAPTER
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return EPISODE
    if suffix in ARCHIVE_SUFFIXES or suffix in IMAGE_SUFFIXES:
        return CHAPTER
    raise SourceError(f"{p}: unknown source type {suffix!r} (expected a folder, .cbz/.zip, an image or a video)")


@dataclass
class PageEntry:
    """One page of a chapter, in reading order. `problem` is set for entries that are
    refused without reading (unsafe archive path)."""

    index: int
    name: str
    read: Callable[[], bytes] | None
    problem: str | None = None


@dataclass
class ChapterListing:
    pages: list[PageEntry]
    skipped: list[str] = field(default_factory=list)  # non-image files, with reason


def _is_unsafe_member(name: str) -> bool:
    pure = PurePosixPath(name.replace("\\", "/"))
    return pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":")


def list_chapter(path: str | Path) -> ChapterListing:
    """Pages of a chapter in natural reading order."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)]
        files.sort(key=lambda f: natural_key(f.relative_to(p).as_posix()))
        pages, skipped = [], []
        for f in files:
            rel = f.relative_to(p).as_posix()
            if f.suffix.lower() in IMAGE_SUFFIXES:
                pages.append(PageEntry(len(pages), rel, f.read_bytes))
            else:
                skipped.append(f"{f}: not an image, skipped")
        return ChapterListing(pages, skipped)
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ChapterListing([PageEntry(0, p.name, p.read_bytes)])
    if suffix in ARCHIVE_SUFFIXES:
        return _list_archive(p)
    raise SourceError(f"{p}: not a chapter source")


def _list_archive(path: Path) -> ChapterListing:
    try:
        archive = zipfile.ZipFile(path)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path}: not a readable zip/cbz archive ({exc})") from None
    members = [i for i in infos if not i.is_dir()]
    members.sort(key=lambda i: natural_key(i.filename))
    pages, skipped = [], []
    for info in members:
        name = info.filename
        base = PurePosixPath(name.replace("\\", "/")).name
        if _is_unsafe_member(name):
            # Refused outright: nothing of it is read, and nothing is ever extracted.
            pages.append(PageEntry(len(pages), name, None, f"{path}!{name}: unsafe path in archive, refused"))
            continue
        if base.startswith(".") or "__MACOSX" in name:
            continue
        if PurePosixPath(base).suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(f"{path}!{name}: not an image, skipped")
            continue

        def read(info=info) -> bytes:
            with zipfile.ZipFile(path) as zf:
                return zf.read(info)

        pages.append(PageEntry(len(pages), name, read))
    archive.close()
    return ChapterListing(pages, skipped)


def file_fingerprint(path: str | Path) -> str:
    """Content hash for small files; size+mtime for videos (hashing GBs on every rerun
    would dominate a resume)."""
    p = Path(path)
    st = p.stat()
    if p.suffix.lower() in VIDEO_SUFFIXES:
        return hashlib.sha256(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
