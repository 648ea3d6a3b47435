"""Baseline `welsh`: Welsh, Ashikhmin & Mueller 2002, "Transferring Color to Greyscale Images".

In a decorrelated luminance/chroma space (CIELAB here, the paper uses l-alpha-beta) the
reference luminance is remapped to the page's mean and spread; ~200 jittered samples of the
reference are described by (luminance, 5x5 luminance std); each page pixel takes the chroma
of the sample minimizing 0.5*|dL| + 0.5*|dstd| and keeps its own luminance. It sees texture
and brightness, not regions: it exists to be beaten.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import cKDTree

from .base import ColorizeRequest, WithoutSettings

SAMPLES_PER_REFERENCE = 200
NEIGHBORHOOD = 5
SEED = 2002  # the jittered grid is seeded: same inputs give the same output


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)


def _local_std(lum: np.ndarray) -> np.ndarray:
    mean = cv2.blur(lum, (NEIGHBORHOOD, NEIGHBORHOOD))
    sq = cv2.blur(lum * lum, (NEIGHBORHOOD, NEIGHBORHOOD))
    return np.sqrt(np.maximum(sq - mean * mean, 0))


def _jittered_samples(h: int, w: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    side = max(1, int(np.sqrt(count)))
    ys = (np.arange(side) + rng.random(side)) * h / side
    xs = (np.arange(side) + rng.random(side)) * w / side
    yy, xx = np.meshgrid(ys.astype(np.int64).clip(0, h - 1), xs.astype(np.int64).clip(0, w - 1), indexing="ij")
    return yy.ravel(), xx.ravel()


class WelshColorizer(WithoutSettings):
    name = "welsh"

    def colorize(self, request: ColorizeRequest) -> np.ndarray:
        h, w = request.lines.shape
        page = request.page if request.page.shape[:2] == (h, w) else cv2.cvtColor(request.lines, cv2.COLOR_GRAY2RGB)
        target = _lab(page)
        t_lum = target[..., 0]
        if not request.references:
            return page.copy()
        rng = np.random.default_rng(SEED)
        feats, chroma = [], []
        for ref in request.references:
            lab = _lab(ref.color)
            lum = lab[..., 0]
            # Luminance remapping: match the reference's mean/std to the page's.
            lum = (lum - lum.mean()) * (t_lum.std() / max(lum.std(), 1e-3)) + t_lum.mean()
            std = _local_std(lum)
            ys, xs = _jittered_samples(*lum.shape, SAMPLES_PER_REFERENCE, rng)
            feats.append(np.stack([lum[ys, xs], std[ys, xs]], axis=1))
            chroma.append(lab[ys, xs, 1:])
        feats_all = np.concatenate(feats)
        chroma_all = np.concatenate(chroma)
        t_feat = np.stack([t_lum.ravel(), _local_std(t_lum).ravel()], axis=1)
        # Best sample per page pixel: 0.5*|dL| + 0.5*|dstd| is an L1 distance, so a k-d
        # tree with p=1 finds it exactly (distinct page features only, they repeat a lot).
        unique, inverse = np.unique(t_feat.round(2), axis=0, return_inverse=True)
        _, best_unique = cKDTree(feats_all).query(unique, k=1, p=1)
        best = best_unique[inverse.ravel()]
        out = target.copy()
        out[..., 1:] = chroma_all[best].reshape(h, w, 2)
        return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
