"""A multi-character dev chapter built from OpenMoji (CC BY-SA 4.0), for the instances work.

All emojis designed by OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0

Every page holds 2–3 *different* characters at varied sizes, in one or two panels; inside a
panel characters stand apart, touch (their outlines meet) or overlap (the one in front
hides part of the one behind, as drawn art would). Written in the multi-instance
evaluation layout (bench/bench_instances.py, models/instance_metrics.py):

    pages/<page>_line.png        the page's line art (what the pipeline colorizes)
    pages/<page>_color.png       the same composition in color (ground truth)
    pages/<page>_instances.json  [{"identity": ..., "bbox": [x0, y0, x1, y1]}, ...]  (visible part)
    refs/<identity>/*.png        colored renderings of OTHER views of each character
    single/pages/...             the same characters, one per page at the same place
                                 (the single-character baseline of the same drawings)

Occlusion is real: characters are alpha-composited back to front, and in line art the
character's body is white paint, so it hides the strokes behind it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from chromaflow.demo import ATTRIBUTION, _line_only_svg, _svg_dir

# identity -> (reference views, page views): pages never show a reference drawing.
DEV_IDENTITIES: dict[str, tuple[list[str], list[str]]] = {
    "cat": (["1F638", "1F63A", "1F63B"], ["1F639", "1F63C", "1F63D", "1F63E", "1F63F", "1F640"]),
    "monkey": (["1F648"], ["1F649", "1F64A"]),
    "smiley": (["1F600", "1F604", "1F609"], ["1F60D", "1F610", "1F614", "1F61B", "1F620", "1F622", "1F62E"]),
    "man_dark": (["1F468-1F3FF", "1F481-1F3FF-200D-2642-FE0F", "1F645-1F3FF-200D-2642-FE0F"],
                 ["1F646-1F3FF-200D-2642-FE0F", "1F64B-1F3FF-200D-2642-FE0F", "1F64D-1F3FF-200D-2642-FE0F",
                  "1F64E-1F3FF-200D-2642-FE0F", "1F647-1F3FF-200D-2642-FE0F", "1F926-1F3FF-200D-2642-FE0F",
                  "1F937-1F3FF-200D-2642-FE0F"]),
    "woman_medium_dark": (["1F469-1F3FE", "1F481-1F3FE-200D-2640-FE0F", "1F645-1F3FE-200D-2640-FE0F"],
                          ["1F646-1F3FE-200D-2640-FE0F", "1F64B-1F3FE-200D-2640-FE0F",
                           "1F64D-1F3FE-200D-2640-FE0F", "1F64E-1F3FE-200D-2640-FE0F",
                           "1F647-1F3FE-200D-2640-FE0F", "1F926-1F3FE-200D-2640-FE0F",
                           "1F937-1F3FE-200D-2640-FE0F"]),
}
ARRANGEMENTS = ("apart", "touching", "overlapping")
OVERLAP_SHARE = (0.08, 0.25)  # overlapping: share of the smaller character's width hidden


@dataclass
class Placed:
    identity: str
    code: str
    line: np.ndarray  # RGBA renderings at the placed size
    color: np.ndarray
    x: int
    y: int
    arrangement: str  # of its panel: apart | touching | overlapping


def render_rgba(code: str, size: int, line_art: bool) -> np.ndarray:
    """An OpenMoji SVG rendered on transparency (RGBA uint8), cropped to its visible box."""
    import cairosvg

    svg = (_svg_dir() / f"{code}.svg").read_text(encoding="utf-8")
    if line_art:
        svg = _line_only_svg(svg)
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    rgba = np.asarray(Image.open(io.BytesIO(png), formats=["PNG"]).convert("RGBA"))
    ys, xs = np.nonzero(rgba[..., 3] > 0)
    return np.ascontiguousarray(rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def _alpha_masks(placed: list[Placed], shape: tuple[int, int]) -> list[np.ndarray]:
    masks = []
    for p in placed:
        m = np.zeros(shape, bool)
        h, w = p.color.shape[:2]
        m[p.y:p.y + h, p.x:p.x + w] = p.color[..., 3] > 127
        masks.append(m)
    return masks


def compose(placed: list[Placed], canvas: np.ndarray, which: str) -> np.ndarray:
    """Alpha-composite the characters back to front (list order) over `canvas`."""
    out = canvas.astype(np.float32)
    for p in placed:
        art = p.line if which == "line" else p.color
        h, w = art.shape[:2]
        a = art[..., 3:4].astype(np.float32) / 255.0
        region = out[p.y:p.y + h, p.x:p.x + w]
        out[p.y:p.y + h, p.x:p.x + w] = region * (1 - a) + art[..., :3].astype(np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def visible_boxes(placed: list[Placed], shape: tuple[int, int]) -> list[list[int] | None]:
    """Each character's visible part (not hidden by one in front of it) as [x0, y0, x1, y1]."""
    masks = _alpha_masks(placed, shape)
    boxes = []
    for i, m in enumerate(masks):
        visible = m & ~np.any(masks[i + 1:], axis=0) if i + 1 < len(masks) else m
        ys, xs = np.nonzero(visible)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None)
    return boxes


def _fit_row(arts: list[tuple[np.ndarray, np.ndarray]], arrangement: str, rng: np.random.Generator
             ) -> list[tuple[int, int]]:
    """Offsets (x, y) of characters laid out left to right with the requested contact:
    each one slides towards the previous until they are apart by a gap, just touch, or
    overlap by a share of the smaller width (decided on the alpha masks, not the boxes)."""
    offsets = [(0, 0)]
    for i in range(1, len(arts)):
        prev_alpha = arts[i - 1][1][..., 3] > 127
        alpha = arts[i][1][..., 3] > 127
        px, py = offsets[-1]
        y = py + int(rng.integers(-alpha.shape[0] // 6, alpha.shape[0] // 6 + 1))
        target = {"apart": None, "touching": 0.0, "overlapping": rng.uniform(*OVERLAP_SHARE)}[arrangement]
        width = min(prev_alpha.shape[1], alpha.shape[1])
        if target is None:  # apart: a clear gap of 4-12% of the smaller width
            offsets.append((px + prev_alpha.shape[1] + int(width * rng.uniform(0.04, 0.12)), y))
            continue
        x = px + prev_alpha.shape[1]
        while x > px - alpha.shape[1]:
            shared = _overlap_columns(prev_alpha, (px, py), alpha, (x, y))
            if (target == 0.0 and shared > 0) or (target > 0 and shared >= target * width):
                break
            x -= max(1, width // 200)
        offsets.append((x, y))
    return offsets


def _overlap_columns(a: np.ndarray, at_a: tuple[int, int], b: np.ndarray, at_b: tuple[int, int]) -> int:
    """How many columns the two masks share pixels in (placed at the given offsets)."""
    x0, y0 = min(at_a[0], at_b[0]), min(at_a[1], at_b[1])
    x1 = max(at_a[0] + a.shape[1], at_b[0] + b.shape[1])
    y1 = max(at_a[1] + a.shape[0], at_b[1] + b.shape[0])
    ca, cb = np.zeros((y1 - y0, x1 - x0), bool), np.zeros((y1 - y0, x1 - x0), bool)
    ca[at_a[1] - y0:at_a[1] - y0 + a.shape[0], at_a[0] - x0:at_a[0] - x0 + a.shape[1]] = a
    cb[at_b[1] - y0:at_b[1] - y0 + b.shape[0], at_b[0] - x0:at_b[0] - x0 + b.shape[1]] = b
    return int((ca & cb).any(axis=0).sum())


def fill_panel(box: tuple[int, int, int, int], members: list[tuple[str, str]], arrangement: str,
               rng: np.random.Generator) -> list[Placed]:
    """Characters (identity, code) of one panel, sized and laid out to fit inside `box`."""
    x0, y0, x1, y1 = box
    pw, ph = x1 - x0, y1 - y0
    for shrink in (1.0, 0.85, 0.7, 0.55, 0.45):
        sizes = [int(min(pw / len(members) * 1.15, ph) * rng.uniform(0.6, 1.0) * shrink) for _ in members]
        arts = [(render_rgba(code, s, True), render_rgba(code, s, False)) for (_, code), s in zip(members, sizes)]
        offsets = _fit_row(arts, arrangement, rng)
        left = min(x for x, _ in offsets)
        top = min(y for _, y in offsets)
        right = max(x + a[1].shape[1] for (x, _), a in zip(offsets, arts))
        bottom = max(y + a[1].shape[0] for (_, y), a in zip(offsets, arts))
        if right - left <= pw - 8 and bottom - top <= ph - 8:
            break
    dx = x0 + 4 + int(rng.integers(0, max(1, pw - 8 - (right - left)))) - left
    dy = y0 + 4 + int(rng.integers(0, max(1, ph - 8 - (bottom - top)))) - top
    placed = [Placed(ident, code, line, color, x + dx, y + dy, arrangement)
              for (ident, code), (line, color), (x, y) in zip(members, arts, offsets)]
    order = list(rng.permutation(len(placed)))  # who is in front is random
    return [placed[i] for i in order]


def page_layout(rng: np.random.Generator, page_size: tuple[int, int], count: int) -> list[list[int]]:
    """Panel boxes (interiors) and how many characters each holds: one panel with all of
    them, or two stacked panels (2 + 1, or 2 + 2 characters split)."""
    width, height = page_size
    margin, gutter = width // 20, width // 40
    if count == 2 or rng.random() < 0.4:
        return [[margin, margin, width - margin, height - margin, count]]
    split = int(rng.integers(2, count)) if count > 2 else 1
    mid = margin + (height - 2 * margin - gutter) // 2
    return [[margin, margin, width - margin, mid, split], [margin, mid + gutter, width - margin, height - margin,
                                                           count - split]]


def _frame(canvas: np.ndarray, box: list[int], thickness: int) -> None:
    x0, y0, x1, y1 = box
    canvas[y0 - thickness:y1 + thickness, x0 - thickness:x1 + thickness] = 0
    canvas[y0:y1, x0:x1] = 255


def build_multi_character_chapter(out_dir: str | Path, num_pages: int = 12, page_size: tuple[int, int] = (1200, 1700),
                                  seed: int = 0, identities: dict | None = None) -> Path:
    """Write the layout described in the module docstring under `out_dir`; returns it."""
    table = identities or DEV_IDENTITIES
    out = Path(out_dir)
    for sub in ("pages", "single/pages"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for identity, (ref_views, _) in table.items():
        for base in (out / "refs", out / "single" / "refs"):
            (base / identity).mkdir(parents=True, exist_ok=True)
            for code in ref_views:
                Image.fromarray(_flat(render_rgba(code, 512, False))).save(base / identity / f"{code.lower()}.png")
    rng = np.random.default_rng(seed)
    names = sorted(table)
    for page_no in range(num_pages):
        count = 2 + int(rng.random() < 0.5)
        chosen = [str(n) for n in rng.choice(names, size=count, replace=False)]
        members = [(n, str(rng.choice(table[n][1]))) for n in chosen]
        write_page(out, f"p{page_no + 1:02d}", members, page_size, rng)
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION + "\n")
    return out


def write_page(out: Path, name: str, members: list[tuple[str, str]], page_size: tuple[int, int],
               rng: np.random.Generator) -> None:
    """One multi-character page (and its single-character companions) in the layout."""
    width, height = page_size
    frame = max(3, width // 200)
    canvas = np.full((height, width, 3), 255, np.uint8)
    placed: list[Placed] = []
    start = 0
    for x0, y0, x1, y1, n in page_layout(rng, page_size, len(members)):
        _frame(canvas, [x0, y0, x1, y1], frame)
        arrangement = ARRANGEMENTS[int(rng.integers(0, len(ARRANGEMENTS)))] if n > 1 else "apart"
        placed += fill_panel((x0, y0, x1, y1), members[start:start + n], arrangement, rng)
        start += n
    _write(out / "pages", name, placed, canvas)
    for i, p in enumerate(placed):
        _write(out / "single" / "pages", f"{name}-{i + 1}", [p], canvas)


def _write(folder: Path, name: str, placed: list[Placed], canvas: np.ndarray) -> None:
    boxes = visible_boxes(placed, canvas.shape[:2])
    Image.fromarray(compose(placed, canvas, "line")).save(folder / f"{name}_line.png")
    Image.fromarray(compose(placed, canvas, "color")).save(folder / f"{name}_color.png")
    truth = [{"identity": p.identity, "bbox": box, "view": p.code, "arrangement": p.arrangement}
             for p, box in zip(placed, boxes) if box]
    (folder / f"{name}_instances.json").write_text(json.dumps(truth, indent=1) + "\n")


def _flat(rgba: np.ndarray) -> np.ndarray:
    """RGBA over white paper."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.clip(rgba[..., :3] * a + 255 * (1 - a) + 0.5, 0, 255).astype(np.uint8)
