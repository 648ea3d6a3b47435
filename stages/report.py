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

from chromaflow.storage.atomic import write_bytes
from chromaflow.storage.images import decode_png, encode_jpeg, resize_longest
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import read_shard, read_stats

from .registry import FINAL, INGEST, SHARD_SETS


def jpeg_data_uri(rgb: np.ndarray) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(rgb, quality=80)).decode()


def thumbnail_uri(rgb: np.ndarray, size: int) -> str:
    return jpeg_data_uri(resize_longest(rgb, size))


def before_after_uris(job: JobDir, pages: list[dict], height: int = 240) -> dict[str, str]:
    """{page key: JPEG data URI of the original page and its colorization side by side}
    for exported pages (dicts with "key" and "index"); each shard is read once."""
    shard_size = job.read_info()["config"]["job"]["shard_size"]
    wanted: dict[int, set[str]] = {}
    for page in pages:
        wanted.setdefault(page["index"] // shard_size, set()).add(page["key"])
    uris = {}
    for shard, keys in wanted.items():
        if read_stats(job, FINAL, shard) is None:
            continue
        before = _before_images(job, shard)
        for sample in read_shard(job.shard_path(FINAL, shard)):
            key = sample["__key__"]
            if key not in keys or key not in before:
                continue
            a, b = decode_png(before[key]["png"]), decode_png(sample["png"])
            size = (max(1, round(a.shape[1] * height / a.shape[0])), height)
            gap = np.full((height, 8, 3), 255, np.uint8)
            uris[key] = jpeg_data_uri(np.hstack([cv2.resize(a, size, interpolation=cv2.INTER_AREA), gap,
                                                 cv2.resize(b, size, interpolation=cv2.INTER_AREA)]))
    return uris


def _before_images(job: JobDir, shard: int) -> dict:
    if read_stats(job, INGEST, shard) is None:
        return {}
    return {s["__key__"]: s for s in read_shard(job.shard_path(INGEST, shard))}


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


def write_report(job: JobDir, manifest_rows: list[dict], pages: list[dict], failures: list[str],
                 thumb_size: int = 320) -> Path:
    info = job.read_info()
    cards = []
    for shard in range(job.num_shards()):
        before = _before_images(job, shard)
        if read_stats(job, FINAL, shard) is None:
            continue
        for sample in read_shard(job.shard_path(FINAL, shard)):
            meta = json.loads(sample["json"])
            orig = before.get(sample["__key__"])
            before_img = (f'<img alt="before" src="{thumbnail_uri(decode_png(orig["png"]), thumb_size)}">'
                          if orig else "")
            after_img = f'<img alt="after" src="{thumbnail_uri(decode_png(sample["png"]), thumb_size)}">'
            idents = ", ".join(i or "(unnamed pool)" for i in meta.get("identities", [])) or "unknown"
            cards.append(
                f'<div class="card"><div class="pair">{before_img}{after_img}</div>'
                f'<div class="cap">#{meta["index"] + 1} {html.escape(meta["source"])} · '
                f'{meta["width"]}×{meta["height"]} · identities: {html.escape(idents)}<br>'
                f'references: {html.escape(", ".join(meta.get("references", [])))}</div></div>')
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
<h2>Before / after</h2><div class="grid">{''.join(cards)}</div>
<h2>Palette memory</h2>{palette_memory_html(job, info['config']['colorize'].get('palette_memory', False))}
<h2>Shards</h2><table><tr><th>shard</th>{header}</tr>{''.join(body)}</table>
</body></html>"""
    target = job.root / "report.html"
    write_bytes(target, doc.encode())
    return target
