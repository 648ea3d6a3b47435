"""Reading a studio's colored archive: chapters and their pages (or episodes and frames).

SRC is one chapter/episode (a folder of images, a .cbz/.zip, a video, an image) or a folder
of them: every subfolder, archive and video directly inside SRC is one chapter, in natural
order. Pages come out as RGB scaled down to `train.page_max_side`; an unreadable or corrupt
page is skipped with a warning naming it (and listed in the training set's `skipped`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from chromaflow.conf import Config
from chromaflow.storage.images import ImageError, decode_image, resize_longest
from chromaflow.storage.sources import (
    ARCHIVE_SUFFIXES, CHAPTER, EPISODE, IMAGE_SUFFIXES, VIDEO_SUFFIXES, SourceError, list_chapter, natural_key)
from chromaflow.storage.video import VideoReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chapter:
    index: int
    source: Path
    kind: str  # CHAPTER or EPISODE

    @property
    def tag(self) -> str:
        """Key prefix and pool folder name, e.g. c0003."""
        return f"c{self.index:04d}"


def _is_chapter(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in ARCHIVE_SUFFIXES | VIDEO_SUFFIXES


def list_chapters(src: str | Path) -> list[Chapter]:
    root = Path(src)
    if not root.exists():
        raise SourceError(f"{root}: source does not exist")
    kind_of = lambda p: EPISODE if p.suffix.lower() in VIDEO_SUFFIXES else CHAPTER  # noqa: E731
    if root.is_file():
        if not _is_chapter(root) and root.suffix.lower() not in IMAGE_SUFFIXES:
            raise SourceError(f"{root}: not a chapter, archive, video or image")
        return [Chapter(0, root, kind_of(root))]
    children = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    nested = [p for p in children if _is_chapter(p)]
    if not nested:
        return [Chapter(0, root, CHAPTER)]  # a folder of pages is one chapter
    for loose in (p for p in children if p.is_file() and not _is_chapter(p)):
        skip_warning(f"{loose}: not inside a chapter folder/archive/video, skipped")
    return [Chapter(i, p, kind_of(p)) for i, p in enumerate(nested)]


def skip_warning(message: str) -> str:
    log.warning(message)
    warnings.warn(message, stacklevel=3)
    return message


def iter_pages(chapter: Chapter, config: Config, skipped: list[str]) -> Iterator[tuple[int, str, np.ndarray]]:
    """(index in the chapter, source name, RGB page at training size); problems go to `skipped`."""
    limit = config.train.page_max_side
    if chapter.kind == EPISODE:
        ingest = config.ingest
        try:
            reader = VideoReader(chapter.source, ingest.video_stride, ingest.max_frames)  # probes: may refuse
            for frame in reader:
                yield frame.index, f"{chapter.source}#frame{frame.frame_number}", resize_longest(frame.image, limit)
        except SourceError as exc:
            skipped.append(skip_warning(f"{exc}; episode skipped"))
            return
        # unreadable stretches (bad packets, a cut-off tail): one line each, the rest is used
        skipped += [skip_warning(stretch.message(chapter.source).split("; ")[0] + "; frames skipped")
                    for stretch in reader.skipped]
        return
    try:
        listing = list_chapter(chapter.source)
    except SourceError as exc:
        skipped.append(skip_warning(f"{exc}; chapter skipped"))
        return
    archive = chapter.source.is_file() and chapter.source.suffix.lower() in ARCHIVE_SUFFIXES
    for entry in listing.pages:
        name = f"{chapter.source}!{entry.name}" if archive else str(chapter.source / entry.name) \
            if chapter.source.is_dir() else str(chapter.source)
        if entry.problem or entry.read is None:
            skipped.append(skip_warning(entry.problem or f"{name}: unreadable, skipped"))
            continue
        try:
            rgb = decode_image(entry.read(), name, config.job.max_image_pixels, config.job.max_image_side,
                               config.job.max_page_memory_mb << 20)
        except (ImageError, OSError) as exc:
            skipped.append(skip_warning(f"{exc}; page skipped"))
            continue
        yield entry.index, name, resize_longest(rgb, limit)
