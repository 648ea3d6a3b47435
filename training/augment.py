"""Random augmentations of training samples, all driven by an explicit numpy Generator.

- `patch_shuffle`: MangaNinja's patch shuffle (cut a reference into a g x g grid and permute
  the cells) so the model must match local parts instead of copying global layout.
- `patch_crop_box` / `crop_output_size`: ColorFlow's patch-wise training: a random crop of
  the 2W x 2H canvas that always contains the whole query area, then downsampled.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]
LATENT_MULTIPLE = 64  # VAE 8 x UNet 8: image sides must be multiples of this


def patch_shuffle(image: np.ndarray, grid: int, rng: np.random.Generator) -> np.ndarray:
    """The image with its grid x grid cells permuted (a border that does not fill a whole
    cell stays in place). Grids finer than the image are reduced to one pixel per cell."""
    height, width = image.shape[:2]
    grid = max(1, min(grid, height, width))
    cell_h, cell_w = height // grid, width // grid
    cells = [image[r * cell_h:(r + 1) * cell_h, c * cell_w:(c + 1) * cell_w] for r in range(grid) for c in range(grid)]
    order = rng.permutation(len(cells))
    out = image.copy()
    for slot, source in enumerate(order):
        r, c = divmod(slot, grid)
        out[r * cell_h:(r + 1) * cell_h, c * cell_w:(c + 1) * cell_w] = cells[source]
    return out


def patch_crop_box(canvas_size: tuple[int, int], query_box: Box, context: float,
                   rng: np.random.Generator) -> Box:
    """A crop of the canvas (W2 x H2) holding the whole query box plus `context` (0..1) of
    the reference border on each axis, at a random position."""
    canvas_w, canvas_h = canvas_size
    qx0, qy0, qx1, qy1 = query_box
    crop_w = (qx1 - qx0) + round(context * (canvas_w - (qx1 - qx0)))
    crop_h = (qy1 - qy0) + round(context * (canvas_h - (qy1 - qy0)))
    x_lo, x_hi = max(0, qx1 - crop_w), min(qx0, canvas_w - crop_w)
    y_lo, y_hi = max(0, qy1 - crop_h), min(qy0, canvas_h - crop_h)
    x0 = int(rng.integers(x_lo, x_hi + 1))
    y0 = int(rng.integers(y_lo, y_hi + 1))
    return x0, y0, x0 + crop_w, y0 + crop_h


def crop_output_size(crop_w: int, crop_h: int, downsample: float) -> tuple[int, int]:
    """Training image size for a crop: scaled, sides rounded to multiples of 64 (at least 64)."""
    def side(n: int) -> int:
        return max(LATENT_MULTIPLE, int(round(n * downsample / LATENT_MULTIPLE)) * LATENT_MULTIPLE)

    return side(crop_w), side(crop_h)
