"""Guided upsampling: bring a colorization made at work size back to the page's size.

Chroma is upsampled and then refined with a guided filter (He et al. 2010) whose guide is
the full-resolution gray page, so color edges snap to the page's real strokes; lightness
comes from the page itself, so line detail is never blurred by the upscale.

Memory: the filter works in float32 LAB, about 85 bytes per page pixel, so pages are
processed in full-width bands of at most TILE_PIXELS (plus a halo of 2 x radius rows, the
filter's reach, so a band sees exactly what the whole page would), written into the output
page: the stage holds the page, the output and one band, whatever the page size. Each
band's colors are upsampled on their own (`upsample_rows`: bilinear in float with
cv2.resize's geometry), so the result does not depend on the band size.
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


TILE_PIXELS = 1 << 21  # ~2.1 Mpx a band: ~180 MB of float work (storage/images.py PAGE_FIXED_BYTES)


def guided_upsample(color: np.ndarray, page: np.ndarray, cfg: UpscaleConfig | None = None,
                    lightness: str = "min", tile_pixels: int = TILE_PIXELS) -> np.ndarray:
    """color: RGB uint8 at work size; page: RGB uint8 original at full size.
    Returns RGB uint8 at the page's size (in bands of tile_pixels for big pages)."""
    cfg = cfg or UpscaleConfig()
    if lightness not in LIGHTNESS_BY_KIND.values():
        raise ValueError(f"lightness must be one of {sorted(set(LIGHTNESS_BY_KIND.values()))}, not {lightness!r}")
    h, w = page.shape[:2]
    halo = 2 * cfg.radius
    rows = max(halo * 4, tile_pixels // w)
    out = np.empty_like(page)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        a, b = max(0, y0 - halo), min(h, y1 + halo)
        band = _filter(upsample_rows(color, (w, h), a, b), page[a:b], cfg, lightness)
        out[y0:y1] = band[y0 - a:y0 - a + (y1 - y0)]
    return out


def upsample_rows(color: np.ndarray, size: tuple[int, int], y0: int, y1: int) -> np.ndarray:
    """Rows y0..y1 of color bilinearly resized to size (w, h), with cv2.resize's geometry
    (pixel centers, edges clamped), without making the whole resized image."""
    w, h = size
    ch, cw = color.shape[:2]

    def taps(n_out: int, n_in: int, start: int, stop: int):
        pos = (np.arange(start, stop, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    ylo, yhi, wy = taps(h, ch, y0, y1)
    xlo, xhi, wx = taps(w, cw, 0, w)
    src_rows = np.arange(ylo.min(), yhi.max() + 1)
    src = color[src_rows].astype(np.float32)
    wx3 = wx[None, :, None]
    across = src[:, xlo] * (1 - wx3) + src[:, xhi] * wx3  # (source rows, w, 3)
    wy3 = wy[:, None, None]
    band = across[ylo - src_rows[0]] * (1 - wy3) + across[yhi - src_rows[0]] * wy3
    return np.clip(band + 0.5, 0, 255).astype(np.uint8)


def _filter(up: np.ndarray, page: np.ndarray, cfg: UpscaleConfig, lightness: str) -> np.ndarray:
    """The guided upsample of one band (or the whole page): up = colors at page size."""
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
    else:  # "color"
        out[..., 0] = guided_filter(guide, lab[..., 0], radius, cfg.eps)
    return cv2.cvtColor(np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
