"""Baseline `gray_rank` (formerly `palette`): global color transfer by gray-level rank.

The page's fill is ranked by gray level (line art blurred a little, so pixels near strokes
are darker than open paper) and every pixel takes the color at the same rank of the
reference pool's luminance-sorted pixels. It knows nothing about regions: it exists to be
beaten.
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import ColorizeRequest, WithoutSettings

SAMPLES = 4096  # pixels kept per reference (luminance quantiles)


class GrayRankColorizer(WithoutSettings):
    name = "gray_rank"

    def colorize(self, request: ColorizeRequest) -> np.ndarray:
        h, w = request.lines.shape
        page_gray = cv2.cvtColor(request.page, cv2.COLOR_RGB2GRAY) if request.page.shape[:2] == (h, w) \
            else request.lines
        if not request.references:
            return np.repeat(page_gray[..., None], 3, axis=2)
        ranked = _ranked_pixels(request)
        # Rank of every pixel's gray level among the page's pixels, in [0, 1].
        gray = cv2.GaussianBlur(page_gray.astype(np.float32), (0, 0), 2.0).ravel()
        order = np.argsort(gray, kind="stable")
        ranks = np.empty(len(order), dtype=np.float64)
        ranks[order] = np.arange(len(order)) / max(1, len(order) - 1)
        index = np.minimum((ranks * (len(ranked) - 1)).round().astype(np.int64), len(ranked) - 1)
        return ranked[index].reshape(h, w, 3)


def _ranked_pixels(request: ColorizeRequest) -> np.ndarray:
    """All references' pixels sorted by luminance, resampled to SAMPLES entries each
    (so every reference weighs the same whatever its size)."""
    entries = []
    for ref in request.references:
        px = ref.color.reshape(-1, 3)
        lum = cv2.cvtColor(ref.color, cv2.COLOR_RGB2GRAY).ravel()
        sorted_px = px[np.argsort(lum, kind="stable")]
        pick = np.linspace(0, len(sorted_px) - 1, SAMPLES).round().astype(np.int64)
        entries.append(sorted_px[pick])
    pool = np.concatenate(entries)
    lum = cv2.cvtColor(pool[None], cv2.COLOR_RGB2GRAY)[0]
    return pool[np.argsort(lum, kind="stable")]
