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
from chromaflow.storage.images import ImageError, decode_image, encode_png
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes, read_stats
from chromaflow.storage.sources import (CHAPTER, EPISODE, SourceError, file_fingerprint, iter_video, list_chapter,
                                        probe_video, source_kind)

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
    fps: float | None = None
    shards_written: list[int] = field(default_factory=list)


def sample_key(kind: str, index: int) -> str:
    return f"{'f' if kind == EPISODE else 'p'}{index:06d}"


def run(job: JobDir, source: str | Path, config: Config) -> IngestSummary:
    """Write the ingest shards (unchanged ones are kept) and record the shard count in job.json."""
    if source_kind(source) == EPISODE:
        summary = _ingest_episode(Path(source), job, config)
    else:
        summary = _ingest_chapter(Path(source), job, config)
    job.write_info({**job.read_info(), "num_shards": summary.num_shards, "num_items": summary.num_items,
                    "fps": summary.fps})
    return summary


def _ingest_chapter(source: Path, job: JobDir, config: Config) -> IngestSummary:
    listing = list_chapter(source)
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
        raw: list[tuple] = []
        digest = hashlib.sha256()
        for page in members:
            data = b""
            problem = page.problem
            if problem is None:
                try:
                    data = page.read()
                except OSError as exc:
                    problem = f"{source}/{page.name}: cannot read ({exc.strerror or exc})"
            digest.update(f"{page.index}:{page.name}:".encode())
            digest.update(hashlib.sha256(data).digest())
            raw.append((page, data, problem))
        input_sha = digest.hexdigest()
        if _ingested(job, shard, input_sha, config_sha):
            summary.failed.extend(_previous_failures(job, shard))
            continue
        samples, failed = [], []
        for page, data, problem in raw:
            display = f"{source}/{page.name}" if source.is_dir() else (
                f"{source}!{page.name}" if source.suffix.lower() in (".cbz", ".zip") else str(source))
            if problem is None:
                try:
                    rgb = decode_image(data, display, config.job.max_image_pixels, config.job.max_image_side)
                except ImageError as exc:
                    problem = str(exc)
            if problem is not None:
                log.error(problem)
                failed.append({"key": sample_key(CHAPTER, page.index), "name": page.name, "error": problem})
                continue
            meta = {"index": page.index, "source": page.name, "width": rgb.shape[1], "height": rgb.shape[0],
                    "scene_id": 0, "kind": CHAPTER}
            samples.append({"__key__": sample_key(CHAPTER, page.index), "png": encode_png(rgb), "json": json_bytes(meta)})
        finish_shard(job, INGEST, shard, samples, failed, input_sha, config_sha, started)
        summary.failed.extend(failed)
        summary.shards_written.append(shard)
    return summary


def _ingest_episode(source: Path, job: JobDir, config: Config) -> IngestSummary:
    info = probe_video(source)
    size = config.job.shard_size
    ing = config.ingest
    config_sha = stage_config_sha(config, INGEST)
    fingerprint = file_fingerprint(source)
    summary = IngestSummary(EPISODE, 0, 0, fps=info.fps / ing.video_stride)
    frames = iter_video(source, ing.video_stride, ing.max_frames, ing.scene_cut_threshold)
    for shard, batch in enumerate(_batched(frames, size)):
        started = time.time()
        input_sha = hashlib.sha256(f"{fingerprint}:{shard}:{len(batch)}".encode()).hexdigest()
        summary.num_items += len(batch)
        summary.num_shards = shard + 1
        if _ingested(job, shard, input_sha, config_sha):
            continue  # decoded anyway (videos only seek reliably forward); not rewritten
        samples = []
        for frame in batch:
            meta = {"index": frame.index, "source": f"{source.name}#frame={frame.frame_number}",
                    "frame_number": frame.frame_number, "timestamp": round(frame.timestamp, 6),
                    "width": frame.image.shape[1], "height": frame.image.shape[0],
                    "scene_id": frame.scene_id, "kind": EPISODE}
            samples.append({"__key__": sample_key(EPISODE, frame.index), "png": encode_png(frame.image),
                            "json": json_bytes(meta)})
        finish_shard(job, INGEST, shard, samples, [], input_sha, config_sha, started)
        summary.shards_written.append(shard)
    if summary.num_items == 0:
        raise SourceError(f"{source}: video has no decodable frames")
    return summary


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
