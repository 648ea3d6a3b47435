"""Source readers: a chapter (folder of images, .cbz/.zip, one image) or an episode (a
video, read by storage/video.py).

Readers only read. Archives are never extracted to disk: entries are read into memory,
and entries whose names try to leave the archive (`../`, absolute paths) are refused.
Reading is bounded (ReadLimits): a page file over job.max_file_mb is refused before it is
read, an archive entry by its declared size before it is decompressed, and every read is
capped as it streams, so a lying header costs nothing. Symlinks that resolve outside the
chapter folder are refused by name (job.follow_symlinks: false); links inside it are read.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

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


class PageReadError(ValueError):
    """One page of a chapter cannot be read (too big, corrupt archive entry, link out of the
    source); str() is one line naming it. The rest of the chapter is read."""


@dataclass(frozen=True)
class ReadLimits:
    """What reading a chapter may cost: each page file is refused above max_bytes (an
    archive entry by its declared size before anything is decompressed, and read with a
    streaming cap in case the size lies); symlinks out of the source are refused unless
    follow_symlinks (job.max_file_mb, job.follow_symlinks)."""

    max_bytes: int = 1 << 30
    follow_symlinks: bool = False


@dataclass
class PageEntry:
    """One page of a chapter, in reading order. `problem` is set for entries that are
    refused without reading (unsafe archive path, too big, link out of the source).
    `read` returns the bytes and `sha256` hashes them streaming (both raise PageReadError)."""

    index: int
    name: str
    read: Callable[[], bytes] | None
    problem: str | None = None
    sha256: Callable[[], str] | None = None


@dataclass
class ChapterListing:
    pages: list[PageEntry]
    skipped: list[str] = field(default_factory=list)  # non-image files, with reason


def _is_unsafe_member(name: str) -> bool:
    pure = PurePosixPath(name.replace("\\", "/"))
    return pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":")


def _capped_chunks(f, limit: int, name: str) -> Iterator[bytes]:
    """The stream's bytes in chunks; PageReadError as soon as it holds more than limit."""
    total = 0
    while chunk := f.read(1 << 20):
        total += len(chunk)
        if total > limit:
            raise PageReadError(f"{name}: holds more than {limit} bytes (job.max_file_mb); refused")
        yield chunk


def _file_entry(index: int, path: Path, rel: str, limits: ReadLimits) -> PageEntry:
    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as f:
            yield from _capped_chunks(f, limits.max_bytes, str(path))

    def sha256() -> str:
        h = hashlib.sha256()
        for chunk in chunks():
            h.update(chunk)
        return h.hexdigest()

    size = path.stat().st_size
    problem = (f"{path}: file is {size} bytes, over the limit (job.max_file_mb={limits.max_bytes >> 20}); refused "
               f"before reading") if size > limits.max_bytes else None
    return PageEntry(index, rel, lambda: b"".join(chunks()), problem, sha256)


def _outside_link(path: Path, root: Path, limits: ReadLimits) -> str | None:
    """Why a symlinked page is refused, or None (not a link, a link inside the source, or
    links are followed)."""
    if limits.follow_symlinks or not path.is_symlink():
        return None
    target = path.resolve()
    if target.is_relative_to(root):
        return None
    return f"{path}: symlink to {target}, outside the chapter folder; refused (job.follow_symlinks is off)"


def list_chapter(path: str | Path, limits: ReadLimits = ReadLimits()) -> ChapterListing:
    """Pages of a chapter in natural reading order."""
    p = Path(path)
    if p.is_dir():
        return _list_folder(p, limits)
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ChapterListing([_file_entry(0, p, p.name, limits)])
    if suffix in ARCHIVE_SUFFIXES:
        return _list_archive(p, limits)
    raise SourceError(f"{p}: not a chapter source")


def _list_folder(folder: Path, limits: ReadLimits) -> ChapterListing:
    root = folder.resolve()
    found = [f for f in folder.rglob("*") if not any(part.startswith(".") for part in f.relative_to(folder).parts)]
    found.sort(key=lambda f: natural_key(f.relative_to(folder).as_posix()))
    pages, skipped = [], []
    for f in found:
        rel = f.relative_to(folder).as_posix()
        if f.is_dir():
            if f.is_symlink():  # rglob does not descend into linked folders
                skipped.append(f"{f}: symlinked folder, not followed")
            continue
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            if f.is_file() or f.is_symlink():
                skipped.append(f"{f}: not an image, skipped")
            continue
        refused = _outside_link(f, root, limits)
        if refused is None and not f.is_file():
            refused = f"{f}: broken symlink or not a regular file; skipped"
        if refused is not None:
            pages.append(PageEntry(len(pages), rel, None, refused))
            continue
        pages.append(_file_entry(len(pages), f, rel, limits))
    return ChapterListing(pages, skipped)


def _is_link_member(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def _list_archive(path: Path, limits: ReadLimits) -> ChapterListing:
    try:
        archive = zipfile.ZipFile(path)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path}: not a readable zip/cbz archive ({exc})") from None
    by_name = {i.filename: i for i in infos}
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
        target, problem = info, None
        if _is_link_member(info):
            target, problem = _archive_link_target(archive, path, info, by_name, limits)
        if problem is None and target.file_size > limits.max_bytes:
            problem = (f"{path}!{name}: entry is {target.file_size} bytes uncompressed, over the limit "
                       f"(job.max_file_mb={limits.max_bytes >> 20}); refused before decompressing")
        pages.append(_member_entry(len(pages), path, name, target, problem, limits))
    archive.close()
    return ChapterListing(pages, skipped)


def _archive_link_target(archive: zipfile.ZipFile, path: Path, link: zipfile.ZipInfo,
                         by_name: dict[str, zipfile.ZipInfo], limits: ReadLimits) -> tuple[zipfile.ZipInfo, str | None]:
    """The member a symlink entry points to. Links are resolved inside the archive only
    (nothing is ever read from the disk through an archive), even with job.follow_symlinks."""
    if link.file_size > 4096:
        return link, f"{path}!{link.filename}: symlink entry too long; refused"
    dest = archive.read(link).decode("utf-8", "replace")
    parts: list[str] = list(PurePosixPath(link.filename).parent.parts)
    for part in PurePosixPath(dest).parts:
        if part == "..":
            if not parts:
                parts = None
                break
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    resolved = "/".join(parts) if parts is not None and not dest.startswith("/") else None
    if resolved is None or resolved not in by_name or _is_link_member(by_name[resolved]):
        return link, f"{path}!{link.filename}: symlink to {dest}, outside the archive or not a page; refused"
    return by_name[resolved], None


def _member_entry(index: int, path: Path, name: str, info: zipfile.ZipInfo, problem: str | None,
                  limits: ReadLimits) -> PageEntry:
    display = f"{path}!{name}"
    cap = min(info.file_size, limits.max_bytes)

    def chunks() -> Iterator[bytes]:
        try:
            with zipfile.ZipFile(path) as zf, zf.open(info) as f:
                yield from _capped_chunks(f, cap, display)
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
            raise PageReadError(f"{display}: corrupt archive entry ({exc})") from None

    def sha256() -> str:
        h = hashlib.sha256()
        for chunk in chunks():
            h.update(chunk)
        return h.hexdigest()

    return PageEntry(index, name, lambda: b"".join(chunks()), problem, sha256)


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
