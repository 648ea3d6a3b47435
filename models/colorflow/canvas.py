"""ColorFlow's stitched canvas: the input of its In-context Colorization Pipeline (ICP).

A pure image function (numpy + OpenCV): the retrieval stage feeds it the patches it found,
the diffusion backend builds the canvas it colorizes with it.

Layout (ColorFlow app.py, see docs/retrieval.md): a white 2W x 2H canvas split into a 4x4
grid of W/2 x H/2 cells. The query (page line art / grayscale) fills the centre 2x2 cells at
(W/2, H/2). Each query quadrant's top-1/2/3 retrieved patches go to the 3 border cells next
to that quadrant, resized to (W/2 - 2) x (H/2 - 2) at cell offset + 1 px (a 1-px white
gutter); the best match sits beside the quadrant's side, the third in the corner:

    (row, col)   top-1    top-2    top-3
    TL           (1, 0)   (0, 1)   (0, 0)
    TR           (1, 3)   (0, 2)   (0, 3)
    BL           (2, 0)   (3, 1)   (3, 0)
    BR           (2, 3)   (3, 2)   (3, 3)

The mask is 0 on the centre (the region to generate) and 255 on the reference border.
ColorFlow only allows 640x640, 512x800 and 800x512; here W x H are multiples of 64 chosen
near the page's aspect ratio with about `area` pixels, and `Canvas.to_page` maps a
generated canvas back to the page size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from chromaflow.models.patches import QUADRANTS

# (row, col) of the top-1, top-2, top-3 cells for each quadrant, as in ColorFlow's idx_table.
CELL_TABLE: dict[str, list[tuple[int, int]]] = {
    "tl": [(1, 0), (0, 1), (0, 0)],
    "tr": [(1, 3), (0, 2), (0, 3)],
    "bl": [(2, 0), (3, 1), (3, 0)],
    "br": [(2, 3), (3, 2), (3, 3)],
}
DEFAULT_AREA = 640 * 640  # ColorFlow's default 640x640 work size
MULTIPLE = 64


@dataclass
class Canvas:
    image: np.ndarray  # 2H x 2W x 3 uint8
    mask: np.ndarray  # 2H x 2W uint8: 0 = region to generate (centre), 255 = references
    query_box: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the query in the canvas
    cell_size: tuple[int, int]  # (W/2, H/2)
    work_size: tuple[int, int]  # (W, H) the query was resized to
    page_size: tuple[int, int]  # (width, height) of the page the query came from
    cells: list[dict] = field(default_factory=list)  # placed patches: quadrant, rank, cell, box

    @property
    def scale(self) -> tuple[float, float]:
        """Canvas query pixels per page pixel, (sx, sy)."""
        return self.work_size[0] / self.page_size[0], self.work_size[1] / self.page_size[1]

    def query_crop(self, generated: np.ndarray) -> np.ndarray:
        """The centre (query) region of a generated canvas, at work size."""
        x0, y0, x1, y1 = self.query_box
        return generated[y0:y1, x0:x1]

    def to_page(self, generated: np.ndarray) -> np.ndarray:
        """Centre of a generated canvas resized back to the page size. The generated canvas
        may be at another resolution (e.g. latent-aligned); it is scaled to 2W x 2H first."""
        full_w, full_h = self.image.shape[1], self.image.shape[0]
        if generated.shape[:2] != (full_h, full_w):
            generated = cv2.resize(generated, (full_w, full_h), interpolation=cv2.INTER_CUBIC)
        centre = self.query_crop(generated)
        interp = cv2.INTER_AREA if self.page_size[0] < self.work_size[0] else cv2.INTER_CUBIC
        return cv2.resize(centre, self.page_size, interpolation=interp)

    def info(self) -> dict:
        """JSON-serializable description (stored next to the canvas in the retrieval shards)."""
        return {"query_box": list(self.query_box), "cell_size": list(self.cell_size),
                "work_size": list(self.work_size), "page_size": list(self.page_size), "cells": self.cells}


def choose_work_size(page_width: int, page_height: int, area: int = DEFAULT_AREA,
                     multiple: int = MULTIPLE) -> tuple[int, int]:
    """(W, H), multiples of `multiple`, about `area` pixels, aspect near the page's."""
    if page_width <= 0 or page_height <= 0:
        raise ValueError(f"page size {page_width}x{page_height} is empty")
    aspect = page_width / page_height
    best = None
    base_w = math.sqrt(area * aspect)
    for w in {max(multiple, math.floor(base_w / multiple) * multiple),
              max(multiple, math.ceil(base_w / multiple) * multiple)}:
        h_ideal = w / aspect
        for h in {max(multiple, math.floor(h_ideal / multiple) * multiple),
                  max(multiple, math.ceil(h_ideal / multiple) * multiple)}:
            # Aspect error first (log ratio), area error second.
            cost = (abs(math.log((w / h) / aspect)), abs(math.log(w * h / area)))
            if best is None or cost < best[0]:
                best = (cost, (w, h))
    return best[1]


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return image[..., :3]
    return image


def build_canvas(query: np.ndarray, quadrant_patches: list[list[np.ndarray]],
                 size: tuple[int, int] | None = None, area: int = DEFAULT_AREA) -> Canvas:
    """Stitch a query and its retrieved patches as ColorFlow does.

    query: the page (line art uint8 H x W, or RGB/gray page), any size and aspect.
    quadrant_patches: 4 lists (TL, TR, BL, BR), each the quadrant's patches best first
        (RGB or gray uint8, any size); at most 3 are used, missing ones leave white cells.
    size: (W, H) work size; None chooses multiples of 64 near the page's aspect.
    """
    if len(quadrant_patches) != len(QUADRANTS):
        raise ValueError(f"build_canvas: expected 4 quadrant patch lists (TL, TR, BL, BR), got {len(quadrant_patches)}")
    page_h, page_w = query.shape[:2]
    w, h = size or choose_work_size(page_w, page_h, area)
    if w % 2 or h % 2 or w < 8 or h < 8:
        raise ValueError(f"build_canvas: work size {w}x{h} must be even and at least 8x8")
    cw, ch = w // 2, h // 2
    image = np.full((2 * h, 2 * w, 3), 255, dtype=np.uint8)
    interp = cv2.INTER_AREA if page_w > w else cv2.INTER_CUBIC
    image[ch:ch + h, cw:cw + w] = cv2.resize(_to_rgb(query), (w, h), interpolation=interp)
    cells = []
    for quadrant, patches in zip(QUADRANTS, quadrant_patches):
        for rank, (patch, (row, col)) in enumerate(zip(patches, CELL_TABLE[quadrant])):
            if patch is None or patch.size == 0:
                continue
            x0, y0 = col * cw + 1, row * ch + 1
            pw, ph = cw - 2, ch - 2
            fitted = cv2.resize(_to_rgb(patch), (pw, ph), interpolation=cv2.INTER_AREA
                                if patch.shape[1] > pw else cv2.INTER_CUBIC)
            image[y0:y0 + ph, x0:x0 + pw] = fitted
            cells.append({"quadrant": quadrant, "rank": rank + 1, "cell": [row, col],
                          "box": [x0, y0, x0 + pw, y0 + ph]})
    mask = np.full((2 * h, 2 * w), 255, dtype=np.uint8)
    mask[ch:ch + h, cw:cw + w] = 0
    return Canvas(image=image, mask=mask, query_box=(cw, ch, cw + w, ch + h), cell_size=(cw, ch),
                  work_size=(w, h), page_size=(page_w, page_h), cells=cells)
