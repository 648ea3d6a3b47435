"""Harder evaluation cases built from one (line, color) pair: the page in another input
style, under a warp, with references framed differently, or with a speech balloon.

A case is made in two steps, both seeded by the pair (so every style sees the same
geometry and a run is reproducible):
1. the condition changes the geometry of the page and its ground truth together
   (`warp`: a smooth random deformation; `framing`: close-ups of the references for the
   full page, or a close-up page for the full references; `balloons`: a speech balloon
   over both), or nothing (`plain`);
2. the style renders the page from that: `line` is the dataset's line image, `gray` the
   ground truth's luminance, `tone` the luminance printed with halftone screens and
   scanned (models/synth_screens.py; the scan's slight rotation turns the ground truth too).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from .synth_balloons import Balloon, add_balloon
from .synth_screens import gray_page, rotate, scan_degrade, tone_page
from .synth_warps import apply_warp, random_warp

STYLES = ("line", "gray", "tone")
CONDITIONS = ("plain", "warp", "framing", "balloons")
CLOSE_UP = (0.5, 0.75)  # close-up window side, share of the drawing's ink box side


@dataclass
class Case:
    page: np.ndarray  # RGB: what the pipeline gets as the page
    true_lines: np.ndarray  # uint8 line image of the page (0 = ink): what the metrics exclude
    truth: np.ndarray  # RGB ground truth, same size as page
    references: list[np.ndarray]  # RGB colored references
    balloon: Balloon | None = None
    info: dict = field(default_factory=dict)  # what was done (screens, warp, framing)


def case_seed(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


def ink_box(color: np.ndarray) -> tuple[int, int, int, int]:
    """Box of the drawing (everything not near-white)."""
    ys, xs = np.nonzero(np.any(color < 235, axis=2))
    if len(xs) == 0:
        return 0, 0, color.shape[1], color.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def close_up_window(color: np.ndarray, rng: np.random.Generator, head: bool) -> tuple[int, int, int, int]:
    """A square window of CLOSE_UP x the drawing's size: on its top part (the head) or
    anywhere on it."""
    x0, y0, x1, y1 = ink_box(color)
    side = int(max(x1 - x0, y1 - y0) * rng.uniform(*CLOSE_UP))
    side = max(16, min(side, color.shape[0], color.shape[1]))
    cx = rng.uniform(x0 + side / 2, max(x0 + side / 2, x1 - side / 2))
    cy = y0 + side / 2 if head else rng.uniform(y0 + side / 2, max(y0 + side / 2, y1 - side / 2))
    wx0 = int(np.clip(cx - side / 2, 0, color.shape[1] - side))
    wy0 = int(np.clip(cy - side / 2, 0, color.shape[0] - side))
    return wx0, wy0, wx0 + side, wy0 + side


def zoom(img: np.ndarray, window: tuple[int, int, int, int], nearest: bool = False) -> np.ndarray:
    """The window scaled up to the image's size (aspect kept: windows are square on a
    square image; otherwise the window is stretched)."""
    x0, y0, x1, y1 = window
    h, w = img.shape[:2]
    return cv2.resize(img[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def apply_condition(condition: str, line: np.ndarray, truth: np.ndarray, references: list[np.ndarray],
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], Balloon | None, dict]:
    """(line RGB, truth, references, balloon, info) after the condition."""
    if condition == "plain":
        return line, truth, references, None, {}
    if condition == "warp":
        warp = random_warp(line.shape[:2], rng)
        return apply_warp(line, warp), apply_warp(truth, warp, nearest=True), references, None, warp.describe()
    if condition == "framing":
        if rng.random() < 0.5:  # close-ups and crops as references for the full page
            refs = [zoom(r, close_up_window(r, rng, head=(k % 2 == 0))) for k, r in enumerate(references)]
            return line, truth, refs, None, {"framing": "close-up references"}
        window = close_up_window(truth, rng, head=True)  # a close-up page, full references
        return zoom(line, window), zoom(truth, window, nearest=True), references, None, {"framing": "close-up page"}
    if condition == "balloons":
        page, truth, balloon = add_balloon(line, truth, rng)
        return page, truth, references, balloon, {"balloon": list(balloon.box)}
    raise ValueError(f"unknown condition {condition!r}; expected one of {', '.join(CONDITIONS)}")


def render_style(style: str, line: np.ndarray, truth: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(page, the scan's rotation matrix or None, info): `tone` is scanned, which turns
    the page a little; the caller turns the ground truth along."""
    if style == "line":
        return line, None, {}
    if style == "gray":
        return gray_page(truth), None, {}
    if style == "tone":
        page, screens = tone_page(truth, rng)
        page, matrix = scan_degrade(page, rng)
        return page, matrix, {"screens": [s.describe() for s in screens]}
    raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")


def make_case(key: str, style: str, condition: str, line: np.ndarray, truth: np.ndarray,
              references: list[np.ndarray]) -> Case:
    """The case of one pair (`key` names it and seeds it) in `style` under `condition`."""
    geometry = np.random.default_rng(case_seed(key, condition))
    line, truth, references, balloon, info = apply_condition(condition, line, truth, references, geometry)
    page, matrix, style_info = render_style(style, line, truth, np.random.default_rng(case_seed(key, condition, style)))
    true_lines = cv2.cvtColor(line, cv2.COLOR_RGB2GRAY)
    if matrix is not None:  # the scan turned the page: the ground truth and masks turn along
        true_lines, truth = rotate(true_lines, matrix), rotate(truth, matrix, nearest=True)
        if balloon is not None:
            turn = lambda m: 255 - rotate(255 - m.astype(np.uint8) * 255, matrix, nearest=True) > 0  # noqa: E731
            balloon = Balloon(turn(balloon.area), turn(balloon.interior), turn(balloon.letters), balloon.box)
    return Case(page, true_lines, truth, references, balloon, {**info, **style_info})
