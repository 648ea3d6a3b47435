"""Temporal consistency of a colored clip: flicker.

For each pair of consecutive output frames, the previous frame is warped onto the current
one with dense optical flow (OpenCV DIS) and the two are compared with CIEDE2000, over the
pixels where the flow is reliable: the forward and backward flows agree (Sundaram et al.'s
consistency check, as in video-colorization papers' warping error) and the warped pixel
lands inside the frame. A clip whose colors stay on their regions scores near 0; a region
that changes color between frames adds its ΔE times its share of the frame.

The flow is computed on `guides` when given (the line art, so the output's own color
changes cannot bend the flow that judges them, and ground truth and output are judged by
the same motion), else on the frames themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

from .metrics import delta_e

# Forward-backward check: |f(x) + b(x + f(x))|^2 < ALPHA * (|f|^2 + |b|^2) + BETA (pixels^2).
CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5


@dataclass
class FlickerResult:
    mean: float  # mean over frame pairs of the per-pair mean ΔE
    per_pair: list[float]
    reliable_share: float  # mean share of pixels the flow was reliable on

    def to_dict(self) -> dict:
        return {"flicker": round(self.mean, 4), "flicker_pairs": len(self.per_pair),
                "flow_reliable_share": round(self.reliable_share, 4)}


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


class FlowWarp:
    """DIS optical flow between two guide frames and the warp it implies."""

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
        self.dis = cv2.DISOpticalFlow_create(preset)

    def warp_previous(self, previous_guide: np.ndarray, current_guide: np.ndarray,
                      previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`previous` warped onto the current frame, and the mask of reliable pixels."""
        prev_g, cur_g = _gray(previous_guide), _gray(current_guide)
        forward = self.dis.calc(cur_g, prev_g, None)  # current pixel -> where it was
        backward = self.dis.calc(prev_g, cur_g, None)
        h, w = cur_g.shape
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        map_x, map_y = xs + forward[..., 0], ys + forward[..., 1]
        warped = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        back = cv2.remap(backward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        error = ((forward + back) ** 2).sum(axis=2)
        bound = CONSISTENCY_ALPHA * ((forward ** 2).sum(axis=2) + (back ** 2).sum(axis=2)) + CONSISTENCY_BETA
        inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        return warped, (error < bound) & inside


def pair_flicker(previous: np.ndarray, current: np.ndarray, previous_guide: np.ndarray | None = None,
                 current_guide: np.ndarray | None = None, warp: FlowWarp | None = None) -> tuple[float, float]:
    """(mean CIEDE2000 over reliable pixels, share of reliable pixels) of one frame pair."""
    warp = warp or FlowWarp()
    warped, reliable = warp.warp_previous(previous if previous_guide is None else previous_guide,
                                          current if current_guide is None else current_guide, previous)
    if not reliable.any():
        return 0.0, 0.0
    de = delta_e(current[reliable], warped[reliable])
    return float(de.mean()), float(reliable.mean())


def clip_flicker(frames: Iterable[np.ndarray], guides: Iterable[np.ndarray] | None = None) -> FlickerResult:
    """Flicker of a clip (RGB uint8 frames in order; guides: same-size gray or RGB frames)."""
    warp = FlowWarp()
    per_pair, shares = [], []
    previous = previous_guide = None
    guide_iter = iter(guides) if guides is not None else None
    for frame in frames:
        guide = next(guide_iter) if guide_iter is not None else None
        if previous is not None and previous.shape == frame.shape:
            value, share = pair_flicker(previous, frame, previous_guide, guide, warp)
            per_pair.append(value)
            shares.append(share)
        previous, previous_guide = frame, guide
    return FlickerResult(float(np.mean(per_pair)) if per_pair else 0.0, per_pair,
                         float(np.mean(shares)) if shares else 0.0)
