"""Episodes: carry colors from a colored keyframe through the following line frames.

Consecutive frames of a shot move little, so the previous frame's colored result is the
best reference for the next one: the region colorizer aligns it (chamfer fit of the
strokes), overlays it region by region and matches regions (Hungarian), which tracks every
region from frame to frame. The keyframe stays in the pool with a lower weight, so a region
mis-colored once is pulled back instead of drifting, and colors do not flicker.

`propagate_clip` is the plain function (tests, demos); `TemporalColorizer` wraps any
colorizer for the pipeline's actors, remembering the last result per scene_id.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from chromaflow.models.colorizers.base import ColorizeRequest, Colorizer, Reference
from chromaflow.models.colorizers.region import RegionColorizer, RegionParams
from chromaflow.models.holds import HoldDetector, HoldParams, reuse_color
from chromaflow.models.segmentation import segment_line_art

PREVIOUS_FRAME_WEIGHT = 1.0
KEYFRAME_WEIGHT = 0.5
# Adjacent frames overlay well, so the overlay vote leads and the descriptor match (made for
# other poses) weighs less than in the page default (BasicPBC round trip: 0.72 vs 0.63);
# references are weighted as measured there (score only: the previous frame always fits best).
PROPAGATION_PARAMS = RegionParams(match_weight=1.0, match_sigma=0.15, fit_power=0.0)


def propagate_clip(keyframe_color: np.ndarray, keyframe_lines: np.ndarray, frames_lines: list[np.ndarray],
                   colorizer: Colorizer | None = None, keyframe_weight: float = KEYFRAME_WEIGHT,
                   frames_pages: list[np.ndarray] | None = None,
                   holds: HoldParams | None = HoldParams()) -> list[np.ndarray]:
    """Colorize `frames_lines` (uint8, 0 = ink; in the order they follow the keyframe, which
    may be backwards in time) starting from the keyframe's colors. `frames_pages` are the
    frames as RGB (colored trace lines are recognised there); default: the line art itself.
    A frame that repeats the drawing before it (models/holds.py; `holds=None`: off) reuses
    its colors, as the pipeline does, so a held drawing cannot flicker. Returns one RGB
    image per frame."""
    colorizer = colorizer or RegionColorizer(PROPAGATION_PARAMS)
    keyframe = Reference("", "keyframe", keyframe_color, keyframe_lines, score=keyframe_weight)
    detector = HoldDetector(holds) if holds is not None else None
    if detector is not None:
        detector.check(-1, keyframe_lines)
    previous: Reference | None = None
    outputs: list[np.ndarray] = []
    for n, lines in enumerate(frames_lines):
        hold = detector.check(n, lines) if detector is not None else None
        if hold is not None:
            source = keyframe_color if hold.source < 0 else outputs[hold.source]
            outputs.append(reuse_color(source, lines, hold.dx, hold.dy))
            continue
        page = frames_pages[n] if frames_pages is not None else cv2.cvtColor(lines, cv2.COLOR_GRAY2RGB)
        refs = [keyframe] if previous is None else [previous, keyframe]
        request = ColorizeRequest(key=f"f{n:06d}", page=page, lines=lines, kind="lineart", references=refs)
        out = colorizer.colorize(request)
        outputs.append(out)
        previous = Reference("", f"f{n:06d}", background_cleaned(out, lines), lines, score=PREVIOUS_FRAME_WEIGHT)
    return outputs


def background_cleaned(color: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """The frame with its background regions reset to white before it serves as the next
    frame's reference. Background = border-touching regions that are mostly white: color
    there can only be a sliver left by misalignment, and passed on, slivers would grow frame
    after frame. Border-touching regions that are mostly colored (hair or a shirt cut by the
    frame) are kept."""
    seg = segment_line_art(lines)
    white = (color >= 250).all(axis=2)
    flat = seg.labels.ravel()
    area = np.bincount(flat, minlength=seg.count)
    white_area = np.bincount(flat, weights=white.ravel().astype(np.float64), minlength=seg.count)
    background = seg.touches_border & (white_area >= 0.5 * np.maximum(area, 1))
    out = color.copy()
    out[background[seg.labels]] = 255
    return out


class TemporalColorizer:
    """Wraps a colorizer for episodes: the previous frame of the same scene joins the
    references (with the top weight), so colors follow regions instead of flickering.
    A new scene_id starts from the retrieved references alone."""

    def __init__(self, inner: Colorizer, previous_weight: float = 2.0):
        self.inner = inner
        self.name = f"temporal-{getattr(inner, 'name', 'colorizer')}"
        self.previous_weight = previous_weight
        self._last: dict[int, Reference] = {}

    def colorize(self, request: ColorizeRequest) -> np.ndarray:
        previous = self._last.get(request.scene_id)
        if previous is not None and previous.color.shape[:2] == request.lines.shape:
            top = max([r.score for r in request.references], default=1.0)
            previous.score = self.previous_weight * max(top, 1e-3)
            request = dataclasses.replace(request, references=[previous] + list(request.references))
        out = self.inner.colorize(request)
        # One scene at a time is remembered: frames arrive in order.
        self._last = {request.scene_id: Reference("", request.key, background_cleaned(out, request.lines),
                                                  request.lines, score=1.0)}
        return out
