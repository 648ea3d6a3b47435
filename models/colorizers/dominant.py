"""Baseline `dominant`: every non-ink page pixel takes the references' dominant color.

The dominant color is the most frequent color (quantized to 32 levels per channel, then
the mean of that bin) among the references' pixels that are neither ink nor paper. It is
the "paint everything the dominant reference color" floor of issue 9: a colorizer whose
foreground accuracy is below it has made the page worse than a single flat fill would.
"""

from __future__ import annotations

import numpy as np

from .base import ColorizeRequest, WithoutSettings

INK = 128  # line-art pixels darker than this are strokes and stay as drawn
PAPER = 235  # reference pixels with every channel at or above this are paper


class DominantColorizer(WithoutSettings):
    name = "dominant"

    def colorize(self, request: ColorizeRequest) -> np.ndarray:
        h, w = request.lines.shape
        out = np.full((h, w, 3), 255, np.uint8)
        color = dominant_color(request)
        if color is not None:
            out[:] = color
        out[request.lines < INK] = 0
        return out


def dominant_color(request: ColorizeRequest) -> np.ndarray | None:
    """The most frequent non-ink, non-paper reference color (None without one)."""
    pixels = []
    for ref in request.references:
        px = ref.color.reshape(-1, 3)
        keep = ~np.all(px >= PAPER, axis=1)
        if ref.lines.shape == ref.color.shape[:2]:  # line art of another size: no ink known
            keep &= ref.lines.reshape(-1) >= INK
        pixels.append(px[keep])
    px = np.concatenate(pixels) if pixels else np.zeros((0, 3), np.uint8)
    if len(px) == 0:
        return None
    q = px >> 3
    keys = (q[:, 0].astype(np.int64) << 10) | (q[:, 1].astype(np.int64) << 5) | q[:, 2]
    top = np.bincount(keys).argmax()
    return px[keys == top].mean(axis=0).round().astype(np.uint8)
