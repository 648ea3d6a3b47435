"""report.html: a before/after contact sheet and the per-shard table of one job.

Self-contained (thumbnails are embedded as JPEG data URIs), so it can be attached to a
ticket or opened from the Prefect UI's link artifact without the job folder.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import cv2
import numpy as np

from typing import Iterator

from chromaflow.storage.atomic import write_bytes
from chromaflow.storage.images import decode_png_reduced, encode_jpeg, resize_longest
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import Sample, iter_shard, key_order, read_stats

from .registry import FINAL, INGEST, SHARD_SETS
from .report_instances import instances_html


def jpeg_data_uri(rgb: np.ndarray) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(rgb, quality=80)).decode()


def thumbnail_uri(png: bytes, size: int) -> str:
    """A page's PNG as a JPEG thumbnail; big pages are decoded at a reduced size."""
    return jpeg_data_uri(resize_longest(decode_png_reduced(png, size), size))


def before_after_uris(job: JobDir, pages: list[dict], height: int = 240) -> dict[str, str]:
    """{page key: JPEG data URI of the original page and its colorization side by side}
    for exported pages (dicts with "key" and "index"); shards are streamed."""
    shard_size = job.read_info()["config"]["job"]["shard_size"]
    wanted: dict[int, set[str]] = {}
    for page in pages:
        wanted.setdefault(page["index"] // shard_size, set()).add(page["key"])
    uris = {}
    for shard, keys in wanted.items():
        for before, after in paired_samples(job, shard):
            key = after["__key__"]
            if key not in keys or before is None:
                continue
            a, b = decode_png_reduced(before["png"], height), decode_png_reduced(after["png"], height)
            size = (max(1, round(a.shape[1] * height / a.shape[0])), height)
            gap = np.full((height, 8, 3), 255, np.uint8)
            uris[key] = jpeg_data_uri(np.hstack([cv2.resize(a, size, interpolation=cv2.INTER_AREA), gap,
                                                 cv2.resize(b, size, interpolation=cv2.INTER_AREA)]))
    return uris


def paired_samples(job: JobDir, shard: int) -> Iterator[tuple[Sample | None, Sample]]:
    """(ingest sample or None, final sample) of a finished final shard, read side by side
    (both shards hold their samples in key order)."""
    if read_stats(job, FINAL, shard) is None:
        return
    before = iter_shard(job.shard_path(INGEST, shard)) if read_stats(job, INGEST, shard) else iter(())
    head = next(before, None)
    for sample in iter_shard(job.shard_path(FINAL, shard)):
        while head is not None and key_order(head["__key__"]) < key_order(sample["__key__"]):
            head = next(before, None)
        yield (head if head is not None and head["__key__"] == sample["__key__"] else None), sample


STATUS_COLORS = {"ok": "#2e7d32", "partial": "#ef6c00", "failed": "#c62828", "missing": "#757575"}

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
h1{margin-bottom:4px} .sub{color:#666;margin-top:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:16px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px}
.pair{display:flex;gap:4px}.pair img{width:50%;object-fit:contain;background:#f4f4f4}
.cap{font-size:12px;color:#555;margin-top:4px;word-break:break-all}
table{border-collapse:collapse;margin:12px 0;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px}
.fail{color:#c62828}
.swatch{display:inline-block;width:22px;height:22px;border:1px solid #999;margin:0 2px;vertical-align:middle}
"""


def palette_memory_html(job: JobDir, enabled: bool) -> str:
    """Each identity's remembered colors (palette_memory.json) as swatches, heaviest first;
    a note when the job uses none (memory off: a file left by an earlier run is not shown)
    or the file is unreadable."""
    if not enabled:
        return "<p>none (colorize.palette_memory is off)</p>"
    if not job.palette_memory.exists():
        return "<p>none (no palette_memory.json in the job folder)</p>"
    try:
        identities = json.loads(job.palette_memory.read_text(encoding="utf-8"))["identities"]
    except (ValueError, KeyError) as exc:
        return f'<p class="fail">{html.escape(str(job.palette_memory))}: unreadable ({html.escape(str(exc))})</p>'
    rows = []
    for name, entries in sorted(identities.items()):
        swatches = "".join(
            f'<span class="swatch" style="background:#{r:02x}{g:02x}{b:02x}" '
            f'title="#{r:02x}{g:02x}{b:02x} · {len(e.get("members", []))} shades{" · fixed" if e.get("fixed") else ""}">'
            f'</span>'
            for e in sorted(entries, key=lambda e: -e.get("weight", 0)) for r, g, b in [e["rgb"]])
        rows.append(f"<tr><td>{html.escape(name or '(unnamed pool)')}</td><td>{swatches}</td></tr>")
    return f"<table><tr><th>identity</th><th>remembered colors</th></tr>{''.join(rows)}</table>"


def contact_sheet_shards(job: JobDir, info: dict) -> dict[int, set[int] | None]:
    """{shard: frame indices to show (None: all)}. Chapters show every page; episodes at most
    export.report_max_frames frames, evenly spaced, so the report's size does not grow with
    the episode's length."""
    shards = job.num_shards()
    if info["kind"] != "episode":
        return {shard: None for shard in range(shards)}
    size, count = info["config"]["job"]["shard_size"], int(info.get("num_items") or 0)
    wanted = sorted({int(round(i)) for i in np.linspace(0, max(0, count - 1),
                                                        min(count, info["config"]["export"]["report_max_frames"]))})
    picks: dict[int, set[int] | None] = {}
    for index in wanted:
        picks.setdefault(index // size, set()).add(index)
    return picks


def episode_html(info: dict) -> str:
    """Episodes: the reuse share, the encoder, audio, notes and unreadable stretches."""
    video = info.get("episode_video")
    if info["kind"] != "episode" or not video:
        return ""
    rows = [("frames", f"{video['frames']} ({video['colored']} colored, {video['repeated']} repeating the last "
                       f"colored frame, {video['uncolored']} uncolored, {video['skipped_filled']} filling "
                       f"unreadable stretches)"),
            ("held drawings", reuse_text(video["reused"], video["frames"])),
            ("encoder", f"{video['encoder']} (crf {video['crf']})"),
            ("audio", ", ".join(video["audio"]) or "none")]
    rows += [("note", note) for note in video.get("notes", [])]
    rows += [("unreadable", f"{g['frames']} frame(s) from {g['start']:.3f} s to {g['end']:.3f} s ({g['reason']})")
             for g in (info.get("video") or {}).get("skipped", [])]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<h2>Episode</h2><table>{body}</table>"


def reuse_text(reused: int, frames: int) -> str:
    """How many frames reused a held drawing's colors (run summary, CLI, report.html)."""
    return f"reused {reused} of {frames} frames ({100 * reused / max(1, frames):.1f} %)"


def write_report(job: JobDir, manifest_rows: list[dict], pages: list[dict], failures: list[str],
                 thumb_size: int = 320) -> Path:
    info = job.read_info()
    cards = []
    for shard, picks in contact_sheet_shards(job, info).items():
        for orig, sample in paired_samples(job, shard):
            meta = json.loads(sample["json"])
            if picks is not None and meta["index"] not in picks:
                continue
            before_img = f'<img alt="before" src="{thumbnail_uri(orig["png"], thumb_size)}">' if orig else ""
            after_img = f'<img alt="after" src="{thumbnail_uri(sample["png"], thumb_size)}">'
            idents = ", ".join(i or "(unnamed pool)" for i in meta.get("identities", [])) or "unknown"
            reused = f' · reuses {html.escape(meta["reused_from"])}' if meta.get("reused_from") else ""
            cards.append(
                f'<div class="card"><div class="pair">{before_img}{after_img}</div>'
                f'<div class="cap">#{meta["index"] + 1} {html.escape(meta["source"])} · '
                f'{meta["width"]}×{meta["height"]} · identities: {html.escape(idents)}{reused}<br>'
                f'references: {html.escape(", ".join(meta.get("references", [])))}'
                f'{"".join(f"<br>{html.escape(note)}" for note in meta.get("notes", []))}</div></div>')
    stages = sorted({r["stage"] for r in manifest_rows}, key=SHARD_SETS.index)
    by_shard: dict[int, dict[str, dict]] = {}
    for row in manifest_rows:
        by_shard.setdefault(row["shard"], {})[row["stage"]] = row
    header = "".join(f"<th>{s}</th>" for s in stages)
    body = []
    for shard in sorted(by_shard):
        cells = []
        for stage in stages:
            row = by_shard[shard].get(stage, {})
            status = row.get("status", "missing")
            title = html.escape(row.get("error") or "")
            cells.append(f'<td title="{title}" style="color:{STATUS_COLORS.get(status, "#000")}">'
                         f'{status} ({row.get("samples", 0)}, {row.get("seconds", 0):.1f}s)</td>')
        body.append(f"<tr><td>{shard:06d}</td>{''.join(cells)}</tr>")
    fail_html = "".join(f'<li class="fail">{html.escape(f)}</li>' for f in failures) or "<li>none</li>"
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>chromaflow · {html.escape(info['name'])}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(info['name'])}</h1>
<p class="sub">{html.escape(info['kind'])} · source {html.escape(info['source'])} · references {html.escape(info['refs'])} ·
backend {html.escape(info['config']['colorize']['backend'])} · {len(pages)} pages written</p>
<h2>Problems</h2><ul>{fail_html}</ul>
{episode_html(info)}
<h2>Before / after</h2><div class="grid">{''.join(cards)}</div>
<h2>Palette memory</h2>{palette_memory_html(job, info['config']['colorize'].get('palette_memory', False))}
<h2>Characters</h2>{instances_html(job, thumb_size)}
<h2>Shards</h2><table><tr><th>shard</th>{header}</tr>{''.join(body)}</table>
</body></html>"""
    target = job.root / "report.html"
    write_bytes(target, doc.encode())
    return target
