"""export: the `upscale/` shards become what a reader or editor uses.

Chapters: `pages/NNNN_<source stem>.png` in reading order at the original sizes, plus
`chapter.cbz`. Episodes: `episode.mp4` streamed from the final shards in order, each frame at
its source timestamp, the source's audio copied (`final_frames` says what stands in for a
frame that was not colored, so timing never shifts), plus `pages/` stills.
Then the manifest and report.html (stages/report.py).

Every export is derived from content: `export.json` records, per final shard, the result
(output_sha256) its pages came from and each page file's size and sha256, and for the
cbz/mp4 and report.html the fingerprint of what they were built from (the pages, the
shards' results, the export config, the problems listed). Each export run verifies all of
it and rebuilds exactly what differs — a page changed or deleted in pages/, a cbz left
stale by a run killed between pages/ and the cbz — also on a rerun that recomputed
nothing. export.json is written last, so an interrupted export is redone. `export_problems`
is the same check without writing, for `chromaflow status`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
import zipfile
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from chromaflow.storage.atomic import atomic_path, write_bytes, write_json
from chromaflow.storage.images import decode_png
from chromaflow.storage.job import JobDir
from chromaflow.storage.manifest import manifest_rows, write_manifest
from chromaflow.storage.shards import iter_shard, read_shard, read_stats, sha256_file
from chromaflow.storage.sources import EPISODE
from chromaflow.storage.video import EpisodeWriter

from .registry import FINAL, INGEST, SHARD_SETS
from .report import reuse_text, write_report

STATE_VERSION = 1


@dataclass
class ExportedPage:
    index: int
    key: str
    source: str
    file: str  # path relative to the job folder
    identities: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    sha256: str = ""  # of the page file (= the final shard's png member)
    bytes: int = 0


def page_file_name(index: int, source: str) -> str:
    stem = PurePosixPath(source.split("#", 1)[0]).stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "page"
    return f"{index + 1:04d}_{stem[:48]}.png"


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def file_record(path: Path) -> dict | None:
    """{"bytes", "sha256"} of a file, None when it is missing."""
    if not path.is_file():
        return None
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def read_export_state(job: JobDir) -> dict:
    try:
        state = json.loads(job.export_state.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return state if state.get("version") == STATE_VERSION else {}


def final_results(job: JobDir) -> dict[int, str]:
    """{shard: output_sha256} of the finished final shards."""
    results = {}
    for shard in range(job.num_shards()):
        stats = read_stats(job, FINAL, shard)
        if stats is not None:
            results[shard] = stats["output_sha256"]
    return results


def _page_intact(job: JobDir, page: dict) -> bool:
    return file_record(job.root / page["file"]) == {"bytes": page["bytes"], "sha256": page["sha256"]}


def _write_shard_pages(job: JobDir, shard: int) -> list[dict]:
    """Write the pages of one final shard (a file is rewritten only when its bytes differ)."""
    pages = []
    for sample in iter_shard(job.shard_path(FINAL, shard)):
        meta = json.loads(sample["json"])
        name = page_file_name(meta["index"], meta["source"])
        data = sample["png"]
        page = ExportedPage(meta["index"], sample["__key__"], meta["source"], f"pages/{name}",
                            meta.get("identities", []), meta.get("references", []),
                            hashlib.sha256(data).hexdigest(), len(data))
        if not _page_intact(job, asdict(page)):
            write_bytes(job.pages / name, data)
        pages.append(asdict(page))
    return pages


def export_pages(job: JobDir, state: dict, force: bool = False) -> tuple[list[ExportedPage], dict]:
    """pages/ from every finished final shard, verified and repaired; returns the pages in
    reading order and the per-shard record for export.json. A shard whose result is the one
    recorded is not read again unless one of its page files differs from its record."""
    recorded = state.get("shards", {})
    shards: dict[str, dict] = {}
    for shard, result in final_results(job).items():
        entry = recorded.get(str(shard))
        pages = entry["pages"] if entry and entry["output_sha256"] == result and not force else None
        if pages is None or not all(_page_intact(job, p) for p in pages):
            pages = _write_shard_pages(job, shard)
        shards[str(shard)] = {"output_sha256": result, "pages": pages}
    exported = sorted((ExportedPage(**p) for entry in shards.values() for p in entry["pages"]),
                      key=lambda p: p.index)
    for stale in _stale_page_files(job, exported):  # from an earlier run with other inputs
        stale.unlink()
    return exported, shards


def _stale_page_files(job: JobDir, pages: list[ExportedPage]) -> list[Path]:
    keep = {Path(p.file).name for p in pages}
    return sorted(p for p in job.pages.glob("*.png") if p.name not in keep) if job.pages.exists() else []


def write_cbz(job: JobDir, pages: list[ExportedPage]) -> Path:
    target = job.root / "chapter.cbz"
    with atomic_path(target, sum(p.bytes + 128 for p in pages)) as tmp:
        # PNGs are already compressed: store them; fixed timestamps keep the archive reproducible.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for page in pages:
                info = zipfile.ZipInfo(Path(page.file).name, date_time=(1980, 1, 1, 0, 0, 0))
                with open(job.root / page.file, "rb") as src, zf.open(info, "w") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
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


def video_fingerprint(job: JobDir) -> str:
    """What episode.mp4 is built from: every shard's ingest and final results, the export
    settings (fps, codec, audio)."""
    shards = [[(read_stats(job, stage, k) or {}).get("output_sha256") for stage in (INGEST, FINAL)]
              for k in range(job.num_shards())]
    return fingerprint({"export": job.read_info()["config"]["export"], "shards": shards})


def cbz_fingerprint(pages: list[ExportedPage]) -> str:
    return fingerprint([[Path(p.file).name, p.sha256] for p in pages])


def report_content(job: JobDir, rows: list[dict], pages: list[ExportedPage]) -> str:
    """What report.html shows, except the problem lines (export_problems can check this)."""
    info = job.read_info()
    memory = sha256_file(job.palette_memory) if job.palette_memory.exists() else None
    return fingerprint({"rows": rows, "pages": [p.file for p in pages], "palette_memory": memory,
                        "info": {k: info.get(k) for k in ("name", "kind", "source", "refs")},
                        "config": {"export": info["config"]["export"], "colorize": info["config"]["colorize"]}})


def _needs_build(target: Path, recorded: dict | None, wanted: str, force: bool) -> bool:
    """A derived file is rebuilt when forced, when it was built from something else, or
    when the file is no longer the one that was built (missing, truncated, edited)."""
    if force or not recorded or recorded.get("fingerprint") != wanted:
        return True
    return file_record(target) != {"bytes": recorded.get("bytes"), "sha256": recorded.get("sha256")}


def _built(target: Path, wanted: str, **extra) -> dict:
    return {"fingerprint": wanted, **file_record(target), **extra}


def _export_archive(job: JobDir, info: dict, pages: list[ExportedPage], state: dict, force: bool) -> tuple[dict, dict]:
    """chapter.cbz or episode.mp4: (outputs for the summary, its export.json record)."""
    if info["kind"] == EPISODE:
        target, wanted = job.root / "episode.mp4", video_fingerprint(job)
        written = info.get("episode_video") or {}
        if _needs_build(target, state.get("video"), wanted, force):
            written = write_episode_video(job, info["config"]["export"]["video_fps"])
        frames, reused = written.get("frames", len(pages)), written.get("reused", 0)
        return ({"video": str(target), "frames": frames, "reused": reused, "encoder": written.get("encoder"),
                 "reuse": reuse_text(reused, frames)}, {"video": _built(target, wanted)})
    target = job.root / "chapter.cbz"
    if not info["config"]["export"]["cbz"]:
        target.unlink(missing_ok=True)  # from a run with export.cbz on: not this job's output
        return {}, {}
    wanted = cbz_fingerprint(pages)
    if _needs_build(target, state.get("cbz"), wanted, force):
        write_cbz(job, pages)
    return {"cbz": str(target)}, {"cbz": _built(target, wanted)}


def export_outputs(job: JobDir, force: bool = False) -> dict:
    """Pages and cbz/mp4, each rebuilt when it differs from what it derives from."""
    info = job.read_info()
    state = read_export_state(job)
    pages, shards = export_pages(job, state, force)
    outputs, records = _export_archive(job, info, pages, state, force)
    return {"outputs": {"pages": len(pages), **outputs}, "pages": [asdict(p) for p in pages],
            "state": {"version": STATE_VERSION, "shards": shards, **records}}


def run(job: JobDir, failures: list[str], force: bool = False) -> dict:
    """Pages, cbz/mp4, manifest and report, then export.json (last: an interrupted export
    is verified and finished by the next one). force rebuilds even what is up to date."""
    exported = export_outputs(job, force)
    state = exported.pop("state")
    rows = write_manifest(job, SHARD_SETS)
    pages = [ExportedPage(**p) for p in exported["pages"]]
    report = job.root / "report.html"
    content = report_content(job, rows, pages)
    wanted = fingerprint([content, failures])
    if _needs_build(report, read_export_state(job).get("report"), wanted, force):
        write_report(job, rows, exported["pages"], failures, job.read_info()["config"]["export"]["report_thumb_size"])
    state["report"] = _built(report, wanted, content=content)
    write_json(job.export_state, {**state, "finished_at": time.time()})
    return {**exported, "report": str(report), "manifest": rows}


def export_problems(job: JobDir) -> list[str]:
    """What is missing or stale in pages/, chapter.cbz / episode.mp4 and report.html, one
    line each (empty: the exports are those of the current results). Writes nothing."""
    state = read_export_state(job)
    if not state:
        return [f"{job.export_state}: missing, the export has not finished (run `chromaflow rerun`)"]
    problems, pages = [], []
    for shard, result in final_results(job).items():
        entry = state["shards"].get(str(shard))
        if entry is None or entry["output_sha256"] != result:
            problems.append(f"{job.pages}: pages of shard {shard:06d} are not exported from its current result")
            continue
        pages += [ExportedPage(**p) for p in entry["pages"]]
        problems += [f"{job.root / p['file']}: missing or changed" for p in entry["pages"] if not _page_intact(job, p)]
    pages.sort(key=lambda p: p.index)
    problems += [f"{path}: not a page of this job's result" for path in _stale_page_files(job, pages)]
    info = job.read_info()
    if info["kind"] == EPISODE:
        checks = [(job.root / "episode.mp4", state.get("video"), video_fingerprint(job))]
    elif info["config"]["export"]["cbz"]:
        checks = [(job.root / "chapter.cbz", state.get("cbz"), cbz_fingerprint(pages))]
    else:
        checks = []
    for target, recorded, wanted in checks:
        if _needs_build(target, recorded, wanted, False):
            problems.append(f"{target}: missing or stale (not built from the current pages)")
    report = job.root / "report.html"
    recorded = state.get("report") or {}
    content = report_content(job, manifest_rows(job, SHARD_SETS), pages)
    if recorded.get("content") != content or _needs_build(report, recorded, recorded.get("fingerprint", ""), False):
        problems.append(f"{report}: missing or stale (not built from the current results)")
    return problems
