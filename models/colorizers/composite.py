"""The region colorizer's last step: the flat fill laid under the page as its style asks.

- line pages: the fill under the page's strokes, as a "multiply" layer (multiply_strokes);
- gray pages: chroma from the fill, lightness from the page (keep_page_luminance);
- tone pages: each region at its fill's lightness plus the descreened page's smooth shading
  inside it (tone_lightness);
- on gray and tone pages a region left as bare paper takes a light fill's lightness
  (with_bare_paper_filled): printed manga leave skin and light colors unscreened.
"""

from __future__ import annotations

import cv2
import numpy as np

from chromaflow.models.segmentation import rgb_keys

BARE_PAPER_L = 240.0  # OpenCV Lab L (0..255) of gray ~238: a tone-page region this light is unscreened paper
MIN_BARE_FILL_L = 166  # OpenCV Lab L (L* 65): colors this light may be printed as bare paper
BARE_NOISE_L = 24  # OpenCV Lab L: bare paper this much darker than white is still paper (scan noise, grain)
TONE_SHADING_SIGMA = 3.0  # px: shading inside a tone region, smoother than any screen's residue


def multiply_strokes(fill: np.ndarray, page: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """"Multiply" layer: paper (255) shows the fill, ink (0) stays ink, edges blend.
    Colored strokes (BasicPBC red/blue shadow/highlight borders) are region borders, not
    ink to keep: they take the region's color instead of darkening it."""
    shade = cv2.cvtColor(page, cv2.COLOR_RGB2GRAY)
    ys, xs = np.nonzero(ink)
    if len(ys):
        hsv = cv2.cvtColor(page[ys, xs][None], cv2.COLOR_RGB2HSV)[0]
        colored = (hsv[:, 1] > 80) & (hsv[:, 2] > 80)
        shade[ys[colored], xs[colored]] = 255
    return cv2.multiply(fill, cv2.cvtColor(shade, cv2.COLOR_GRAY2RGB), scale=1.0 / 255.0)


def tone_lightness(fill: np.ndarray, shade: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 Lab lightness (OpenCV scale) of a colored tone page: every region at its
    fill's lightness plus the descreened page's deviation from the region's mean (the
    shading inside it); ink keeps the page's lightness, bare paper takes the fill's
    (with_bare_paper_filled). A print's tone reproduction (spot function, dot gain) makes a
    screen's mean coverage differ from the drawing's gray by up to ~15 levels, so the
    regions' own colors, not the screen's mean, set the level."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # the Lab L of every gray
    page_l = cv2.cvtColor(ramp, cv2.COLOR_RGB2LAB)[0, :, 0].astype(np.float32)[shade]
    fill_l = cv2.cvtColor(fill, cv2.COLOR_RGB2LAB)[..., 0]
    # The shading is smooth; what descreening left at the screen's frequency is not shading.
    paper = (labels > 0).astype(np.float32)
    smooth_l = cv2.GaussianBlur(page_l * paper, (0, 0), TONE_SHADING_SIGMA) / np.maximum(
        cv2.GaussianBlur(paper, (0, 0), TONE_SHADING_SIGMA), 1e-3)
    flat = labels.ravel()
    count = np.bincount(flat)
    region_mean = np.bincount(flat, weights=page_l.ravel()) / np.maximum(count, 1)
    target = fill_l.astype(np.float32) + smooth_l - region_mean[labels].astype(np.float32)
    screened = (labels > 0) & (region_mean[labels] < BARE_PAPER_L)
    target = np.clip(np.where(screened, target, page_l) + 0.5, 0, 255).astype(np.uint8)
    return with_bare_paper_filled(target, fill_l, labels, region_mean)


def with_bare_paper_filled(page_l: np.ndarray, fill_l: np.ndarray, labels: np.ndarray,
                           region_mean: np.ndarray | None = None) -> np.ndarray:
    """uint8 Lab lightness: the page's (`page_l`), except in regions left as bare paper
    (mean lightness at least BARE_PAPER_L) whose fill is a light color (`fill_l`, the fill's
    uint8 Lab L, at least MIN_BARE_FILL_L), whose paper takes their fill's. On a black-and-white page white paper inside the drawing is
    where no tone was printed: skin is mostly left unscreened in manga, and light colors
    print as bare paper; kept white they would come out uncolored. A dark color is printed
    with a screen, so where the page shows bare paper and the fill is dark (a mouth drawn
    open in the references, white teeth on the page) the page is right and stays white."""
    flat = labels.ravel()
    if region_mean is None:
        region_mean = np.bincount(flat, weights=page_l.ravel().astype(np.float64)) / np.maximum(np.bincount(flat), 1)
    bare = (labels > 0) & (region_mean[labels] >= BARE_PAPER_L)
    if not bare.any():
        return page_l
    # Pixels of a bare region clearly darker than the fill (the paper side of anti-aliased
    # strokes and letters) keep the page's lightness; the paper, scan noise and all, takes
    # the fill's.
    paper = fill_l.astype(np.int16) - page_l.astype(np.int16) <= BARE_NOISE_L
    return np.where(bare & (fill_l >= MIN_BARE_FILL_L) & paper, fill_l, page_l).astype(np.uint8)


def keep_page_luminance(color: np.ndarray, page: np.ndarray | None, target_l: np.ndarray | None = None,
                        index: np.ndarray | None = None) -> np.ndarray:
    """Manga pages carry shading in their gray levels: take chroma from the fill and
    lightness from the page (or `target_l`, uint8 Lab L, when given). Where a chroma is out
    of gamut at the page's lightness (vivid color on white paper), it is reduced until the
    lightness survives the trip to RGB. Computed once per distinct (fill color, page
    lightness) pair: fills are flat. `index`: the fill's palette index per pixel (equal
    index, equal color), which finds the distinct pairs by counting instead of sorting."""
    if target_l is None:
        target_l = cv2.cvtColor(page, cv2.COLOR_RGB2LAB)[..., 0]
    lightness_keys = target_l.ravel().astype(np.int64)
    if index is None:
        keys = (rgb_keys(color.reshape(-1, 3)) << 8) | lightness_keys
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    else:
        keys = index.ravel().astype(np.int64) * 256 + lightness_keys
        present = np.zeros(int(keys.max()) + 1, bool)
        present[keys] = True
        inverse = (np.cumsum(present) - 1)[keys]
        first = np.empty(int(present.sum()), np.int64)
        first[inverse] = np.arange(keys.size)  # any pixel of a pair stands for it
    fills = color.reshape(-1, 3)[first][None]
    lightness = target_l.ravel()[first][None].astype(np.float32)
    lab = cv2.cvtColor(fills, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] = lightness
    chroma = lab[..., 1:] - 128.0
    for _ in range(6):
        lab[..., 1:] = chroma + 128.0
        rgb = cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
        off = np.abs(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32) - lightness) > 2
        if not off.any():
            break
        chroma[off] *= 0.6
    return rgb[0][inverse.ravel()].reshape(color.shape)
