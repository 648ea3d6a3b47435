"""export: the `upscale/` shards become what a reader or editor uses.

Chapters: `pages/NNNN_<source stem>.png` in reading order at the original sizes, plus
`chapter.cbz`. Episodes: `episode.mp4` streamed from the final shards in order, each frame at
its source timestamp, the source's audio copied (`final_frames` says what stands in for a
frame that was not colored, so timing never shifts), plus `pages/` stills.
Existing page files are rewritten only when their content changed. Then the manifest and
report.html (stages/report.py).
"""

from __future__ import annotations

import itertools
import json
import re
import zipfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from chromaflow.storage.atomic import atomic_path, write_bytes
from chromaflow.storage.images import decode_png
from chromaflow.storage.job import JobDir
from chromaflow.storage.manifest import write_manifest
from chromaflow.storage.shards import read_shard, read_stats
from chromaflow.storage.sources import EPISODE
from chromaflow.storage.video import EpisodeWriter

from .registry import FINAL, INGEST, SHARD_SETS
from .report import reuse_text, write_report


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


def final_frames(job: JobDir) -> Iterator[tuple[dict, np.ndarray, str]]:
    """(ingest metadata, RGB, how) for every ingested frame in order, one shard in memory at
    a time. how: `colored`; `repeated` (its colorization failed: the last colored frame of
    the same scene is shown again, so the picture holds still instead of flashing line art);
    `uncolored` (no colored frame of its scene before it: the source frame)."""
    last: tuple[int, np.ndarray] | None = None
    for shard in range(job.num_shards()):
        if read_stats(job, INGEST, shard) is None:
            continue
        colored = ({s["__key__"]: s for s in read_shard(job.shard_path(FINAL, shard))}
                   if read_stats(job, FINAL, shard) is not None else {})
        for sample in read_shard(job.shard_path(INGEST, shard)):
            meta = json.loads(sample["json"])
            done = colored.pop(sample["__key__"], None)
            if done is not None:
                rgb = decode_png(done["png"])
                last = (meta["scene_id"], rgb)
                yield json.loads(done["json"]), rgb, "colored"
            elif last is not None and last[0] == meta["scene_id"]:
                yield meta, last[1], "repeated"
            else:
                yield meta, decode_png(sample["png"]), "uncolored"


def write_episode_video(job: JobDir, fps: float | None) -> dict:
    """Encode episode.mp4 from the final shards in order (memory: one shard). Frames keep
    their source timestamps (fps=None) or are retimed to `fps`; stretches the source could
    not be read repeat the last frame; the source's audio is copied. Returns what was
    written (also stored in job.json as "episode_video")."""
    info = job.read_info()
    video, cfg = info.get("video") or {}, info["config"]["export"]
    frames = final_frames(job)
    first = next(frames, None)
    if first is None:
        raise RuntimeError(f"{job.root}: no frames to encode")
    time_base = Fraction(1) / Fraction(fps).limit_denominator(100000) if fps else Fraction(video.get("time_base", "1/24"))
    rate = fps or float(video.get("fps") or 24.0) / int(video.get("stride", 1))
    notes = [f"{stream} stream of the source not carried over" for stream in video.get("dropped", [])]
    audio = cfg["audio"] and not (fps and abs(fps - rate) > 1e-6)
    if cfg["audio"] and not audio:
        notes.append(f"audio dropped: export.video_fps={fps} retimes the video")
    elif audio and not Path(info["source"]).is_file():
        audio = False
        notes.append(f"audio dropped: the source {info['source']} is no longer there")
    counts = {"colored": 0, "repeated": 0, "uncolored": 0, "reused": 0, "skipped_filled": 0}
    target = job.root / "episode.mp4"
    with atomic_path(target) as tmp:
        height, width = first[1].shape[:2]
        writer = EpisodeWriter(tmp, width, height, time_base, rate, cfg["video_codec"], cfg["video_crf"],
                               cfg["video_preset"], info["source"] if audio else None)
        gaps = _GapFiller(writer, video, retime=fps is not None)
        for meta, rgb, how in itertools.chain([first], frames):
            gaps.write(rgb, int(meta.get("pts", meta["index"])))
            counts[how] += 1
            counts["reused"] += bool(meta.get("reused_from"))
        counts["skipped_filled"] = gaps.finish()
        writer.close(float("inf") if video.get("complete", True) and not fps else None)
        notes += writer.notes
    result = {"file": str(target), "encoder": writer.codec, "crf": cfg["video_crf"], "audio": writer.audio_streams,
              "notes": notes, "frames": sum(counts[k] for k in ("colored", "repeated", "uncolored")), **counts}
    job.write_info({**job.read_info(), "episode_video": result})
    return result


class _GapFiller:
    """Writes frames in order and, where ingest found an unreadable stretch, repeats the
    last frame at the stretch's frame times first (so the frame count and timing hold)."""

    def __init__(self, writer: EpisodeWriter, video: dict, retime: bool):
        self.writer, self.retime, self.step = writer, retime, int(video.get("frame_step", 1))
        self.gaps = sorted((g["start_pts"], g["frames"]) for g in video.get("skipped", []))
        self.count, self.last = 0, None

    def _emit(self, rgb: np.ndarray, pts: int) -> None:
        self.writer.write(rgb, self.count if self.retime else pts)
        self.count += 1
        self.last = rgb

    def write(self, rgb: np.ndarray, pts: int) -> None:
        self._fill(before=pts)
        self._emit(rgb, pts)

    def _fill(self, before: int | None) -> int:
        filled = 0
        while self.gaps and self.last is not None and (before is None or self.gaps[0][0] < before):
            start, frames = self.gaps.pop(0)
            for k in range(frames):
                if before is None or start + k * self.step < before:
                    self._emit(self.last, start + k * self.step)
                    filled += 1
        return filled

    def finish(self) -> int:
        return self._fill(before=None)


def export_outputs(job: JobDir, write: bool = True) -> dict:
    """Pages and cbz/mp4; write=False (nothing changed since the last export) keeps the
    existing video/cbz and only fills in what is missing."""
    info = job.read_info()
    pages = export_pages(job, write)
    outputs = {"pages": len(pages)}
    if info["kind"] == EPISODE:
        video = job.root / "episode.mp4"
        if write or not video.exists():
            written = write_episode_video(job, info["config"]["export"]["video_fps"])
        else:
            written = info.get("episode_video") or {"file": str(video)}
        frames, reused = written.get("frames", len(pages)), written.get("reused", 0)
        outputs.update(video=written["file"], frames=frames, reused=reused, encoder=written.get("encoder"),
                       reuse=reuse_text(reused, frames))
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
