"""Held drawings: animation is drawn "on twos/threes", so consecutive frames often show the
same drawing, sometimes slid by a camera pan. A held frame is colored by reusing the
colorization of the frame whose drawing it repeats.

Detection (`HoldDetector`, fed the frames of a shot in order) compares each frame with the
drawing now being held (the last frame that is colored), never with the previous repeat, so
small differences cannot add up over a long hold:
1. a 64-bit difference hash (dHash) of the gray frame: a cheap filter; within
   `hash_distance` bits the frame may be the same drawing in place;
2. the ink of both frames at `WORK_SIZE`: the share of pixels that are ink in one and not
   in the other must be at most `pixel_threshold` (generated H.264 repeats differ by at most
   0.00003, consecutive drawings of a walk by at least 0.0107, one new 6 px eye stroke on a
   256 px frame by 0.0017);
3. otherwise, a pan: phase correlation finds the shift (at least `MIN_PAN` work pixels, at
   most `max_pan` of the longest side), and the ink is compared over the part both frames
   show, a pixel counting as different only with no ink within one pixel in the other (the
   shift is rounded to whole pixels). Below MIN_PAN that tolerance would hide the motion.

`reuse_color` moves a colorization by the found pan; the strip the pan reveals takes the
nearest colors (edge replicate) under the new frame's own strokes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORK_SIZE = 256  # longest side at which drawings are compared
INK_LEVEL = 160  # gray below this is ink (after area downscaling, thin strokes get lighter)
MIN_PAN = 2.0  # work pixels: smaller shifts are not pans (the 1 px tolerance would hide them)


@dataclass(frozen=True)
class HoldParams:
    hash_distance: int = 6  # dHash bits (of 64) within which a frame may repeat in place
    pixel_threshold: float = 0.0005  # share of pixels whose ink may differ
    max_pan: float = 0.05  # largest pan (share of the longest side) still detected; 0 = off


@dataclass(frozen=True)
class Hold:
    """This frame repeats `source` (its index) moved by (dx, dy) pixels of the frame."""

    source: int
    dx: float
    dy: float
    difference: float  # share of pixels whose ink differs


@dataclass
class _Drawing:
    index: int
    gray: np.ndarray  # uint8 at WORK_SIZE
    ink: np.ndarray  # bool
    near_ink: np.ndarray  # bool, ink dilated by one pixel
    dhash: int
    scale: float  # frame pixels per work pixel


def dhash(gray: np.ndarray) -> int:
    """64-bit difference hash: is each of 8x8 cells brighter than its right neighbor."""
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def _drawing(index: int, image: np.ndarray) -> _Drawing:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    scale = max(gray.shape) / WORK_SIZE
    if scale > 1:
        size = (max(1, round(gray.shape[1] / scale)), max(1, round(gray.shape[0] / scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    else:
        scale = 1.0
    ink = gray < INK_LEVEL
    near = cv2.dilate(ink.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return _Drawing(index, gray, ink, near, dhash(gray), scale)


def ink_difference(a: _Drawing, b: _Drawing, shift: tuple[int, int] = (0, 0), tolerance: bool = False) -> float:
    """Share of the overlap's pixels that are ink in one drawing and not in the other (with
    `tolerance`: not within one pixel of ink), `b` moved by `shift` (work pixels) against `a`."""
    dx, dy = shift
    h, w = a.ink.shape
    if b.ink.shape != (h, w) or abs(dx) >= w or abs(dy) >= h:
        return 1.0
    # Overlap: pixel (x, y) of b is pixel (x - dx, y - dy) of a.
    ya, yb = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    xa, xb = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    a_other, b_other = (a.near_ink, b.near_ink) if tolerance else (a.ink, b.ink)
    mismatch = (a.ink[ya, xa] & ~b_other[yb, xb]) | (b.ink[yb, xb] & ~a_other[ya, xa])
    return float(mismatch.mean()) if mismatch.size else 1.0


class HoldDetector:
    """Feed frames in order with `check`; call `reset` where reuse must not reach across
    (a scene cut, a shard boundary)."""

    def __init__(self, params: HoldParams = HoldParams()):
        self.params = params
        self._held: _Drawing | None = None

    def reset(self) -> None:
        self._held = None

    def check(self, index: int, image: np.ndarray) -> Hold | None:
        """The hold this frame is part of, or None (then it is the new drawing to hold)."""
        drawing = _drawing(index, image)
        held, self._held = self._held, drawing
        if held is None or held.ink.shape != drawing.ink.shape or not held.ink.any():
            return None
        hold = self._compare(held, drawing)
        if hold is not None:
            self._held = held  # keep comparing with the drawing that is colored
        return hold

    def _compare(self, held: _Drawing, drawing: _Drawing) -> Hold | None:
        p = self.params
        if bin(held.dhash ^ drawing.dhash).count("1") <= p.hash_distance:
            difference = ink_difference(held, drawing)
            if difference <= p.pixel_threshold:
                return Hold(held.index, 0.0, 0.0, round(difference, 6))
        if p.max_pan <= 0:
            return None
        (dx, dy), _ = cv2.phaseCorrelate((255 - held.gray).astype(np.float32), (255 - drawing.gray).astype(np.float32))
        limit = p.max_pan * max(held.gray.shape)
        if max(abs(dx), abs(dy)) > limit or max(abs(dx), abs(dy)) < MIN_PAN:
            return None
        difference = ink_difference(held, drawing, (round(dx), round(dy)), tolerance=True)
        if difference > p.pixel_threshold:
            return None
        return Hold(held.index, round(dx * held.scale, 2), round(dy * held.scale, 2), round(difference, 6))


def reuse_color(color: np.ndarray, lines: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """`color` (RGB) moved by (dx, dy) pixels; uncovered pixels take the nearest edge colors
    darkened by this frame's strokes `lines` (gray, 0 = ink), so no stroke goes missing."""
    if round(dx) == 0 and round(dy) == 0:
        return color.copy()
    h, w = color.shape[:2]
    shift = np.float32([[1, 0, round(dx)], [0, 1, round(dy)]])
    moved = cv2.warpAffine(color, shift, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    covered = cv2.warpAffine(np.ones((h, w), np.uint8), shift, (w, h), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    strokes = np.minimum(moved, cv2.cvtColor(lines, cv2.COLOR_GRAY2RGB))
    moved[~covered] = strokes[~covered]
    return moved
