"""ingest: turn a chapter or an episode into the `ingest/` WebDataset shards.

Pages keep their reading-order index even when they fail to decode, so shard membership
(index // shard_size) never depends on which pages were readable, and a resumed run
assigns every page to the same shard. Each sample holds the original image as lossless
PNG plus JSON metadata (index, source file name, size, scene id).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from chromaflow.conf import Config
from chromaflow.conf.schema import IngestConfig
from chromaflow.models.holds import Hold, HoldDetector, HoldParams
from chromaflow.models.scenes import SceneTracker, make_detector
from chromaflow.storage.images import ImageError, decode_image, encode_png
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes, read_stats
from chromaflow.storage.sources import (CHAPTER, EPISODE, PageEntry, PageReadError, ReadLimits, SourceError,
                                        file_fingerprint, list_chapter, source_kind)
from chromaflow.storage.video import VideoFrame, VideoInfo, VideoReader

from .registry import INGEST, stage_config_sha
from .runner import finish_shard, output_intact

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    kind: str
    num_items: int  # pages/frames in reading order, failed ones included
    num_shards: int
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # non-image files
    warnings: list[str] = field(default_factory=list)  # pages used with a caveat (animated: first frame)
    fps: float | None = None
    shards_written: list[int] = field(default_factory=list)
    video: dict | None = None  # episodes: stream facts and skipped stretches (job.json "video")


def sample_key(kind: str, index: int) -> str:
    return f"{'f' if kind == EPISODE else 'p'}{index:06d}"


def run(job: JobDir, source: str | Path, config: Config) -> IngestSummary:
    """Write the ingest shards (unchanged ones are kept) and record the shard count in job.json."""
    if source_kind(source) == EPISODE:
        summary = _ingest_episode(Path(source), job, config)
    else:
        summary = _ingest_chapter(Path(source), job, config)
    job.write_info({**job.read_info(), "num_shards": summary.num_shards, "num_items": summary.num_items,
                    "fps": summary.fps, **({"video": summary.video} if summary.video else {})})
    return summary


def _ingest_chapter(source: Path, job: JobDir, config: Config) -> IngestSummary:
    """Pages in reading order into shards. A shard's pages are hashed first (streaming) and
    the shard is kept when they and the settings are unchanged; otherwise they are read,
    decoded and written one page at a time, so memory holds one page, not the shard."""
    listing = list_chapter(source, ReadLimits(config.job.max_file_mb << 20, config.job.follow_symlinks))
    for warning in listing.skipped:
        log.warning(warning)
    size = config.job.shard_size
    pages = listing.pages
    num_shards = (len(pages) + size - 1) // size
    summary = IngestSummary(CHAPTER, len(pages), num_shards, skipped=listing.skipped)
    config_sha = stage_config_sha(config, INGEST)
    for shard in range(num_shards):
        members = pages[shard * size:(shard + 1) * size]
        started = time.time()
        input_sha = _pages_sha(members)
        if _ingested(job, shard, input_sha, config_sha):
            summary.failed.extend(_previous_failures(job, shard))
            continue
        failed: list[dict[str, str]] = []
        samples = _page_samples(source, members, config, failed, summary.warnings)
        finish_shard(job, INGEST, shard, samples, failed, input_sha, config_sha, started)
        summary.failed.extend(failed)
        summary.shards_written.append(shard)
    return summary


def _pages_sha(members: list[PageEntry]) -> str:
    """What a shard is ingested from: each page's position, name and content hash."""
    digest = hashlib.sha256()
    for page in members:
        digest.update(f"{page.index}:{page.name}:".encode())
        try:
            content = bytes.fromhex(page.sha256()) if page.problem is None else hashlib.sha256(b"").digest()
        except (OSError, PageReadError) as exc:
            content = f"unreadable:{exc}".encode()
        digest.update(content)
    return digest.hexdigest()


def _page_samples(source: Path, members: list[PageEntry], config: Config, failed: list[dict],
                  warnings: list[str]) -> Iterator[dict]:
    """The shard's samples, one page at a time; refused or broken pages go to `failed`."""
    job_cfg = config.job
    for page in members:
        display = f"{source}/{page.name}" if source.is_dir() else (
            f"{source}!{page.name}" if source.suffix.lower() in (".cbz", ".zip") else str(source))
        problem, notes = page.problem, []
        if problem is None:
            try:
                data = page.read()
                rgb = decode_image(data, display, job_cfg.max_image_pixels, job_cfg.max_image_side,
                                   job_cfg.max_page_memory_mb << 20, notes)
                del data
            except PageReadError as exc:
                problem = str(exc)
            except OSError as exc:
                problem = f"{display}: cannot read ({exc.strerror or exc})"
            except ImageError as exc:
                problem = str(exc)
        for note in notes:
            log.warning(note)
            warnings.append(note)
        if problem is not None:
            log.error(problem)
            failed.append({"key": sample_key(CHAPTER, page.index), "name": page.name, "error": problem})
            continue
        meta = {"index": page.index, "source": page.name, "width": rgb.shape[1], "height": rgb.shape[0],
                "scene_id": 0, "kind": CHAPTER}
        if notes:
            meta["notes"] = notes
        yield {"__key__": sample_key(CHAPTER, page.index), "png": encode_png(rgb, consume=True),
               "json": json_bytes(meta)}
        del rgb


def _ingest_episode(source: Path, job: JobDir, config: Config) -> IngestSummary:
    """Frames are decoded, given scene ids and hold marks, and written shard by shard as
    they are read: memory holds one shard, whatever the episode's length."""
    size, ing = config.job.shard_size, config.ingest
    reader = VideoReader(source, ing.video_stride, ing.max_frames)
    for note in reader.info.dropped:
        log.warning("%s: %s stream is not carried into episode.mp4", source, note)
    config_sha = stage_config_sha(config, INGEST)
    fingerprint = file_fingerprint(source)
    summary = IngestSummary(EPISODE, 0, 0, fps=reader.info.fps / ing.video_stride)
    for shard, batch in enumerate(_batched(marked_frames(reader, ing, size), size)):
        started = time.time()
        input_sha = hashlib.sha256(f"{fingerprint}:{shard}:{len(batch)}".encode()).hexdigest()
        summary.num_items += len(batch)
        summary.num_shards = shard + 1
        if _ingested(job, shard, input_sha, config_sha):
            continue  # decoded anyway (videos only seek reliably forward); not rewritten
        samples = [_frame_sample(source, frame, scene, hold) for frame, scene, hold in batch]
        finish_shard(job, INGEST, shard, samples, [], input_sha, config_sha, started)
        summary.shards_written.append(shard)
    if summary.num_items == 0:
        raise SourceError(f"{source}: video has no decodable frames")
    summary.skipped += [skipped.message(source) for skipped in reader.skipped]
    summary.video = video_facts(reader.info, reader)
    return summary


def marked_frames(reader: VideoReader, ing: IngestConfig, shard_size: int):
    """(frame, scene id, Hold or None) in order. A hold never reaches across a scene cut or
    a shard boundary (shards are colored independently, so its source must be in its shard)."""
    threshold = ing.scene_content_threshold if ing.scene_detector == "content" else ing.scene_adaptive_threshold
    tracker = SceneTracker(make_detector(ing.scene_detector, threshold, ing.scene_min_frames))
    holds = HoldDetector(HoldParams(ing.hold_hash_distance, ing.hold_pixel_threshold, ing.hold_max_pan))
    last = None

    def scened():
        for frame in reader:
            yield from tracker.feed(frame, frame.image)
        yield from tracker.finish()

    for frame, scene in scened():
        if (scene, frame.index // shard_size) != last:
            holds.reset()
            last = (scene, frame.index // shard_size)
        yield frame, scene, (holds.check(frame.index, frame.image) if ing.holds else None)


def _frame_sample(source: Path, frame: VideoFrame, scene: int, hold: Hold | None) -> dict:
    meta = {"index": frame.index, "source": f"{source.name}#frame={frame.frame_number}",
            "frame_number": frame.frame_number, "pts": frame.pts, "timestamp": round(frame.timestamp, 6),
            "width": frame.image.shape[1], "height": frame.image.shape[0], "scene_id": scene, "kind": EPISODE}
    if hold is not None:
        meta.update(hold_of=sample_key(EPISODE, hold.source), hold_offset=[hold.dx, hold.dy])
    return {"__key__": sample_key(EPISODE, frame.index), "png": encode_png(frame.image), "json": json_bytes(meta)}


def video_facts(info: VideoInfo, reader: VideoReader) -> dict:
    """What export needs to time the output like the source (job.json "video")."""
    return {"time_base": str(info.time_base), "fps": info.fps, "frame_step": info.frame_step, "stride": reader.stride,
            "start_pts": info.start_pts, "duration": info.duration, "codec": info.codec, "audio": info.audio,
            "dropped": info.dropped, "skipped": [vars(s) for s in reader.skipped],
            "complete": reader.max_frames is None}


def _batched(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ingested(job: JobDir, shard: int, input_sha: str, config_sha: str) -> bool:
    """This shard was ingested from the same bytes and settings, and its tar is intact."""
    stats = read_stats(job, INGEST, shard)
    return (stats is not None and stats.get("input_sha256") == input_sha and stats.get("config_sha256") == config_sha
            and output_intact(job, INGEST, shard, stats))


def _previous_failures(job: JobDir, shard: int) -> list[dict[str, str]]:
    return list((read_stats(job, INGEST, shard) or {}).get("failed", []))
