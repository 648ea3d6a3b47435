"""report.html's "Characters" section: where each character instance is, who it is, and the
colors each identity got on every page (so a character whose jacket changes color from
page to page shows at a glance).

Read from the job's shard sets: `instances/` (masks), `retrieve/` (identities) and
`colorize/` (the colored page at the same work size as the masks). Kept apart from
report.py, which holds the rest of the report; `instances_html` is its only entry.
"""

from __future__ import annotations

import base64
import html
import json
import zlib

import cv2
import numpy as np

from chromaflow.models.instances.assignment import UNKNOWN
from chromaflow.storage.images import decode_png, encode_jpeg
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import read_shard, read_stats

SWATCHES = 5  # colors shown per identity and page
MIN_SWATCH_SHARE = 0.03  # of the instance's pixels
UNKNOWN_COLOR = (128, 128, 128)


def identity_color(name: str) -> tuple[int, int, int]:
    """A stable, saturated outline color per identity (RGB)."""
    if name == UNKNOWN:
        return UNKNOWN_COLOR
    hue = zlib.crc32(name.encode()) % 180
    return tuple(int(v) for v in cv2.cvtColor(np.uint8([[[hue, 220, 200]]]), cv2.COLOR_HSV2RGB)[0, 0])


def dominant_colors(image: np.ndarray, mask: np.ndarray) -> list[tuple[int, int, int]]:
    """The most frequent flat colors inside a mask, paper white and ink left out."""
    px = image[mask]
    if not len(px):
        return []
    lum = px.astype(np.int32).sum(1)
    px = px[(lum > 90) & (lum < 735)]
    if not len(px):
        return []
    keys, counts = np.unique((px[:, 0].astype(np.int64) << 16) | (px[:, 1].astype(np.int64) << 8) | px[:, 2],
                             return_counts=True)
    order = np.argsort(-counts)
    keep = [k for k in order[:SWATCHES] if counts[k] >= MIN_SWATCH_SHARE * mask.sum()]
    return [(int(keys[k] >> 16), int((keys[k] >> 8) & 255), int(keys[k] & 255)) for k in keep]


def outlined(image: np.ndarray, labels: np.ndarray, instances: list[dict], size: int) -> np.ndarray:
    """The page scaled to `size` (longest side) with each instance outlined in its
    identity's color and labeled with its name."""
    scale = size / max(image.shape[:2])
    thumb = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    for inst in instances:
        mask = cv2.resize(np.isin(labels, inst["pieces"]).astype(np.uint8), thumb.shape[1::-1],
                          interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        color = identity_color(inst["identity"])
        cv2.drawContours(thumb, contours, -1, color, 2)
        x0, y0 = (int(v * scale) for v in inst["box"][:2])
        cv2.putText(thumb, inst["identity"], (x0 + 2, max(10, y0 + 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1,
                    cv2.LINE_AA)
    return thumb


def _data_uri(rgb: np.ndarray) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(rgb, quality=80)).decode()


def _swatch(rgb) -> str:
    r, g, b = rgb
    return f'<span class="swatch" style="background:#{r:02x}{g:02x}{b:02x}" title="#{r:02x}{g:02x}{b:02x}"></span>'


def instances_html(job: JobDir, thumb_size: int = 320) -> str:
    """The section's HTML: per page the outlined instances, then a table of each
    identity's colors page by page; a note when no page holds instances."""
    cards: list[str] = []
    colors: dict[str, list[tuple[int, list]]] = {}
    for shard in range(job.num_shards()):
        if any(read_stats(job, stage, shard) is None for stage in ("instances", "retrieve", "colorize")):
            continue
        masks = {s["__key__"]: s for s in read_shard(job.shard_path("instances", shard))}
        found = {s["__key__"]: json.loads(s["json"]) for s in read_shard(job.shard_path("retrieve", shard))}
        for sample in read_shard(job.shard_path("colorize", shard)):
            key = sample["__key__"]
            instances = found.get(key, {}).get("instances", [])
            if not instances or key not in masks:
                continue
            image, labels = decode_png(sample["png"]), decode_png(masks[key]["png"], gray=True)
            if labels.shape != image.shape[:2]:
                continue  # written with another work size; rerun to refresh
            page = int(key[1:]) + 1
            names = ", ".join(html.escape(i["identity"]) for i in instances)
            cards.append(f'<div class="card"><img alt="instances" src="{_data_uri(outlined(image, labels, instances, thumb_size))}">'
                         f'<div class="cap">#{page} · {len(instances)} characters: {names}</div></div>')
            for inst in instances:
                if inst["identity"] != UNKNOWN:
                    colors.setdefault(inst["identity"], []).append(
                        (page, dominant_colors(image, np.isin(labels, inst["pieces"]))))
    if not cards:
        return "<p>none (no page holds character instances, or instances.backend is none)</p>"
    rows = []
    for name, pages in sorted(colors.items()):
        cells = "".join(f'<td>#{page} {"".join(_swatch(c) for c in swatches)}</td>' for page, swatches in pages)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    table = f"<table><tr><th>identity</th><th colspan=\"99\">colors per page</th></tr>{''.join(rows)}</table>"
    return f'<div class="grid">{"".join(cards)}</div><h3>Each identity\'s colors, page by page</h3>{table}'

