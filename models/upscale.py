"""Guided upsampling: bring a colorization made at work size back to the page's size.

Chroma is upsampled and then refined with a guided filter (He et al. 2010) whose guide is
the full-resolution gray page, so color edges snap to the page's real strokes; lightness
comes from the page itself, so line detail is never blurred by the upscale.
"""

from __future__ import annotations

import cv2
import numpy as np

from chromaflow.conf import UpscaleConfig


def box(img: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(img, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Gray-guide guided filter; guide and src are float32 in [0, 1], src may have channels."""
    mean_i = box(guide, radius)
    var_i = box(guide * guide, radius) - mean_i * mean_i
    if src.ndim == 3:
        mean_i3, var_i3, guide3 = mean_i[..., None], var_i[..., None], guide[..., None]
    else:
        mean_i3, var_i3, guide3 = mean_i, var_i, guide
    mean_p = box(src, radius)
    cov_ip = box(src * guide3, radius) - mean_i3 * mean_p
    a = cov_ip / (var_i3 + eps)
    b = mean_p - a * mean_i3
    return box(a, radius) * guide3 + box(b, radius)


# Where the output's lightness comes from, by page style (models/page_styles.py):
#   gray (manga):  the page itself — its shading is the artist's;
#   line:          the darker of colorization and page — fills keep their colors while the
#                  strokes come from the full-resolution page, crisp;
#   tone:          the colorization — it holds the descreened lightness (the full-resolution
#                  page would bring the screen's dots back);
#   color:         the colorization (guided like the chroma).
# "lineart" is the line style's name in shards written before page styles.
LIGHTNESS_BY_KIND = {"gray": "page", "line": "min", "lineart": "min", "tone": "color", "color": "color"}


def guided_upsample(color: np.ndarray, page: np.ndarray, cfg: UpscaleConfig | None = None,
                    lightness: str = "min") -> np.ndarray:
    """color: RGB uint8 at work size; page: RGB uint8 original at full size.
    Returns RGB uint8 at the page's size."""
    cfg = cfg or UpscaleConfig()
    h, w = page.shape[:2]
    up = cv2.resize(color, (w, h), interpolation=cv2.INTER_LINEAR)
    lab = cv2.cvtColor(up, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
    page_lab = cv2.cvtColor(page, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
    guide = page_lab[..., 0]
    # The radius is in full-resolution pixels and kept small: where the page has no stroke
    # to snap to (flat paper), the filter degenerates to a box blur of about 2 * radius.
    radius = cfg.radius
    out = np.empty_like(lab)
    out[..., 1:] = guided_filter(guide, lab[..., 1:], radius, cfg.eps)
    if lightness == "page":
        out[..., 0] = guide
    elif lightness == "min":
        out[..., 0] = np.minimum(guided_filter(guide, lab[..., 0], radius, cfg.eps), guide)
    elif lightness == "color":
        out[..., 0] = guided_filter(guide, lab[..., 0], radius, cfg.eps)
    else:
        raise ValueError(f"lightness must be one of {sorted(set(LIGHTNESS_BY_KIND.values()))}, not {lightness!r}")
    return cv2.cvtColor(np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
