"""The contract every colorizer backend implements.

A backend gets one page at a time (plus what retrieval found for it) and returns an RGB
image of the same height and width. Backends may keep state between calls (an actor
processes a shard's pages in reading order), e.g. a palette memory per identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from chromaflow.models.descreen import PageTone


@dataclass
class Reference:
    """A colored reference image retrieved for a page."""

    identity: str  # ID pool name; "" for the unnamed pool
    name: str  # path relative to the refs folder, e.g. "alice/front.png"
    color: np.ndarray  # RGB uint8, H x W x 3
    lines: np.ndarray  # uint8 H x W, 0 = ink, 255 = paper (same size as color)
    score: float = 0.0  # retrieval similarity, higher is closer


@dataclass
class ColorizeRequest:
    key: str  # sample key, e.g. "p000012"
    page: np.ndarray  # RGB uint8 original page, scaled to the colorize work size
    lines: np.ndarray  # uint8 H x W line art of the page, 0 = ink, 255 = paper
    kind: str  # page style (models/page_styles.py): "line", "gray", "tone" or "color" ("lineart" = line)
    references: list[Reference] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)
    scene_id: int = 0  # episodes: frames of one scene share colors
    # ColorFlow canvas input: per page quadrant (TL, TR, BL, BR) the retrieved reference
    # patches, best first (RGB uint8). None when retrieval stored no quadrant results.
    quadrant_patches: list[list[np.ndarray]] | None = None
    # Palette memory (models/palette_memory.py): the remembered colors (uint8 RGB, N x 3) of the
    # identities on this page; backends snap their fills to them. None: no memory.
    remembered_colors: np.ndarray | None = None
    palette_tolerance: float = 8.0
    # Tone pages: the page's descreened gray (cropped like `page`) as line extraction made
    # it, so the backend need not descreen again. None: the backend descreens `page`.
    tone: PageTone | None = None
    # Filled by the backend with JSON-serialisable facts about this page (the colorize stage
    # copies it into the color shard's JSON and report.html). Keys, all optional:
    #   "style":           the page style the backend handled: line | gray | tone | color
    #   "color_page_kept": true when a color page was passed through unchanged
    #   "screens":         detected halftone screens, [{"period": px, "angle": deg, "strength": x}]
    #   "regions":         number of page regions colored
    #   "low_confidence":  regions whose color is a guess, [{"box": [x0, y0, x1, y1],
    #                      "confidence": 0..1, "color": [r, g, b]}] in request pixels
    #   "balloons":        speech balloons kept as paper, [[x0, y0, x1, y1], ...]
    #   "warnings":        one-line messages naming the page (no strokes, all screentone,
    #                      reference without flat colors, ...)
    diagnostics: dict = field(default_factory=dict)


class Colorizer(Protocol):
    """Backends may also define `colorize_batch(requests) -> list[np.ndarray]` and an int
    `batch_pages` (the colorize stage then hands them that many pages at a time), and
    `uses_quadrant_patches = True` to get `request.quadrant_patches` filled."""

    name: str

    def colorize(self, request: ColorizeRequest) -> np.ndarray:
        """Return an RGB uint8 image with the same height and width as request.lines."""
        ...


class WithoutSettings:
    """A backend that reads no config: `from_config` (what build_colorizer calls) is its
    plain constructor."""

    @classmethod
    def from_config(cls, config):
        return cls()
