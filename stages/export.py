"""export: the `upscale/` shards become what a reader or editor uses.

Chapters: `pages/NNNN_<source stem>.png` in reading order at the original sizes, plus
`chapter.cbz`. Episodes: `episode.mp4` at the source frame rate (frames whose shard
failed are taken uncolored from `ingest/`, so timing never shifts) plus `pages/` stills.
Existing page files are rewritten only when their content changed. Then the manifest and
report.html (stages/report.py).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from chromaflow.storage.atomic import atomic_path, write_bytes
from chromaflow.storage.images import decode_png
from chromaflow.storage.job import JobDir
from chromaflow.storage.manifest import write_manifest
from chromaflow.storage.shards import read_shard, read_stats
from chromaflow.storage.sources import EPISODE

from .registry import FINAL, INGEST, SHARD_SETS
from .report import write_report


@dataclass
class ExportedPage:
    index: int
    key: str
    source: str
    file: str  # path relative to the job folder
    identities: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


def page_file_name(index: int, source: str) -> str:
    stem = PurePosixPath(source.split("#", 1)[0]).stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "page"
    return f"{index + 1:04d}_{stem[:48]}.png"


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    write_bytes(path, data)


def export_pages(job: JobDir, write: bool = True) -> list[ExportedPage]:
    """Write pages/ from every finished final shard; returns them in reading order.
    write=False only lists them (and writes pages that are missing)."""
    pages: list[ExportedPage] = []
    for shard in range(job.num_shards()):
        if read_stats(job, FINAL, shard) is None:
            continue
        for sample in read_shard(job.shard_path(FINAL, shard)):
            meta = json.loads(sample["json"])
            name = page_file_name(meta["index"], meta["source"])
            if write or not (job.pages / name).exists():
                _write_if_changed(job.pages / name, sample["png"])
            pages.append(ExportedPage(meta["index"], sample["__key__"], meta["source"], f"pages/{name}",
                                      meta.get("identities", []), meta.get("references", [])))
    pages.sort(key=lambda p: p.index)
    # Drop stale pages from an earlier run with other inputs.
    keep = {Path(p.file).name for p in pages}
    if job.pages.exists():
        for old in job.pages.glob("*.png"):
            if old.name not in keep:
                old.unlink()
    return pages


def write_cbz(job: JobDir, pages: list[ExportedPage]) -> Path:
    target = job.root / "chapter.cbz"
    with atomic_path(target) as tmp:
        # PNGs are already compressed: store them; fixed timestamps keep the archive reproducible.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for page in pages:
                info = zipfile.ZipInfo(Path(page.file).name, date_time=(1980, 1, 1, 0, 0, 0))
                zf.writestr(info, (job.root / page.file).read_bytes())
    return target


def write_episode_video(job: JobDir, fps: float) -> Path:
    """Encode episode.mp4 from final frames, falling back to the source frame where a
    frame has no colored version."""
    target = job.root / "episode.mp4"
    frames: dict[int, np.ndarray] = {}
    size = None
    for shard in range(job.num_shards()):
        colored = {}
        if read_stats(job, FINAL, shard) is not None:
            colored = {s["__key__"]: s for s in read_shard(job.shard_path(FINAL, shard))}
        if read_stats(job, INGEST, shard) is None:
            continue
        for sample in read_shard(job.shard_path(INGEST, shard)):
            meta = json.loads(sample["json"])
            chosen = colored.get(sample["__key__"], sample)
            rgb = decode_png(chosen["png"])
            frames[meta["index"]] = rgb
            size = size or (rgb.shape[1], rgb.shape[0])
    if not frames:
        raise RuntimeError(f"{job.root}: no frames to encode")
    with atomic_path(target) as tmp:
        mp4 = tmp.with_suffix(".mp4")
        writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise RuntimeError(f"{target}: OpenCV cannot write mp4 here")
        for index in sorted(frames):
            writer.write(cv2.cvtColor(frames[index], cv2.COLOR_RGB2BGR))
        writer.release()
        mp4.replace(tmp)
    return target


def export_outputs(job: JobDir, write: bool = True) -> dict:
    """Pages and cbz/mp4; write=False (nothing changed since the last export) keeps the
    existing video/cbz and only fills in what is missing."""
    info = job.read_info()
    pages = export_pages(job, write)
    outputs = {"pages": len(pages)}
    if info["kind"] == EPISODE:
        fps = info["config"]["export"]["video_fps"] or info.get("fps") or 24.0
        video = job.root / "episode.mp4"
        outputs["video"] = str(write_episode_video(job, float(fps)) if write or not video.exists() else video)
    elif info["config"]["export"]["cbz"]:
        cbz = job.root / "chapter.cbz"
        outputs["cbz"] = str(write_cbz(job, pages) if write or not cbz.exists() else cbz)
    return {"outputs": outputs, "pages": [p.__dict__ for p in pages]}


def run(job: JobDir, failures: list[str], force: bool = True) -> dict:
    """Pages, cbz/mp4, manifest and report. With force=False (nothing was recomputed) the
    existing outputs are kept and only listed."""
    exported = export_outputs(job, write=force)
    rows = write_manifest(job, SHARD_SETS)
    report = job.root / "report.html"
    if force or not report.exists():
        report = write_report(job, rows, exported["pages"], failures,
                              job.read_info()["config"]["export"]["report_thumb_size"])
    return {**exported, "report": str(report), "manifest": rows}
