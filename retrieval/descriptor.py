"""Weight-free patch descriptor in the line-art domain (the default `descriptor` embedder).

Query pages and references are both turned into line art first (references with the
project's line extractor), so the descriptor compares like with like. It is a
multi-scale edge-orientation histogram (HOG-like spatial pyramid):

1. the ink map (1 = ink) is resized to `work_size` x `work_size` and blurred at two
   scales. The blur makes a thick pen stroke and the thin double edge that XDoG traces
   around a thick stroke in a colored reference look alike;
2. gradient orientations (unsigned, 8 bins, soft-assigned) weighted by magnitude are
   summed over 1x1, 2x2, 4x4 and 8x8 grids (fine blur) and 1x1, 2x2, 4x4 (coarse blur);
3. an 8x8 ink-density grid is appended;
4. every block is power-normalised (sqrt, as for Hellinger kernels) and L2-normalised,
   then the whole vector is L2-normalised, so inner product = cosine similarity.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

ORIENTATION_BINS = 8
FINE_LEVELS = (1, 2, 4, 8)
COARSE_LEVELS = (1, 2, 4)
DENSITY_GRID = 8
# Blur sigmas as fractions of the work size: about 2.5 px and 6 px at 256.
FINE_SIGMA = 0.010
COARSE_SIGMA = 0.024


def descriptor_dim() -> int:
    cells = sum(n * n for n in FINE_LEVELS) + sum(n * n for n in COARSE_LEVELS)
    return cells * ORIENTATION_BINS + DENSITY_GRID * DENSITY_GRID


_CELL_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _cell_index(size: int, grid: int) -> np.ndarray:
    """Flat grid-cell number of every pixel of a size x size image (cached)."""
    key = (size, grid)
    if key not in _CELL_CACHE:
        band = np.arange(size) * grid // size
        _CELL_CACHE[key] = (band[:, None] * grid + band[None, :]).ravel()
    return _CELL_CACHE[key]


def _orientation_histogram(ink: np.ndarray, sigma: float, grid: int) -> np.ndarray:
    """(grid, grid, bins) sums of gradient magnitude per cell and soft orientation bin."""
    blurred = cv2.GaussianBlur(ink, (0, 0), sigma)
    gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
    magnitude, angle = cv2.cartToPolar(gx, gy)
    magnitude, angle = magnitude.ravel(), angle.ravel()
    # Flat paper has no gradient: only edge pixels are binned.
    edge = np.flatnonzero(magnitude > 1e-4)
    magnitude = magnitude[edge]
    # Unsigned orientation: a stroke's two sides have opposite gradients, same orientation.
    angle = np.mod(angle[edge], np.float32(np.pi)) * np.float32(ORIENTATION_BINS / np.pi)
    low = np.floor(angle)
    frac = angle - low
    low = low.astype(np.int64) % ORIENTATION_BINS
    high = (low + 1) % ORIENTATION_BINS
    cells = _cell_index(ink.shape[0], grid)[edge] * ORIENTATION_BINS
    size = grid * grid * ORIENTATION_BINS
    hist = (np.bincount(cells + low, weights=magnitude * (1.0 - frac), minlength=size)
            + np.bincount(cells + high, weights=magnitude * frac, minlength=size))
    return hist.reshape(grid, grid, ORIENTATION_BINS)


def _coarser(hist: np.ndarray, grid: int) -> np.ndarray:
    """Sum a (G, G, C) cell histogram into (grid, grid, C); grid divides G."""
    g = hist.shape[0]
    f = g // grid
    return hist.reshape(grid, f, grid, f, hist.shape[2]).sum(axis=(1, 3)).reshape(-1)


def _normalise(block: np.ndarray) -> np.ndarray:
    block = np.sqrt(np.maximum(block, 0.0))
    norm = float(np.linalg.norm(block))
    return block / norm if norm > 1e-12 else block


def describe_lines(lines: np.ndarray, work_size: int = 256) -> np.ndarray:
    """Descriptor of one line-art patch (uint8, 0 = ink, 255 = paper), float32, unit norm
    (all zeros for a blank patch)."""
    if lines.ndim == 3:
        lines = cv2.cvtColor(lines, cv2.COLOR_RGB2GRAY)
    if lines.size == 0:
        return np.zeros(descriptor_dim(), dtype=np.float32)
    ink = 1.0 - cv2.resize(lines, (work_size, work_size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    blocks: list[np.ndarray] = []
    fine = _orientation_histogram(ink, FINE_SIGMA * work_size, max(FINE_LEVELS))
    blocks += [_normalise(_coarser(fine, n)) for n in FINE_LEVELS]
    coarse = _orientation_histogram(ink, COARSE_SIGMA * work_size, max(COARSE_LEVELS))
    blocks += [_normalise(_coarser(coarse, n)) for n in COARSE_LEVELS]
    density = np.bincount(_cell_index(work_size, DENSITY_GRID), weights=ink.ravel(),
                          minlength=DENSITY_GRID * DENSITY_GRID)
    blocks.append(_normalise(density))
    vector = np.concatenate(blocks).astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-12 else vector


class EdgeHistogramEmbedder:
    """Embedder protocol (see retrieval/embedders.py) for the weight-free descriptor."""

    name = "edge-hist"
    version = "1"
    domain = "lines"  # embeds line art: references go through models.lines.extract_lines

    def __init__(self, work_size: int = 256):
        self.work_size = work_size
        self.dim = descriptor_dim()

    @property
    def signature(self) -> str:
        """Everything that changes the vectors; an index refuses queries from another signature."""
        settings = f"{self.name}:{self.version}:{self.work_size}:{ORIENTATION_BINS}:{FINE_LEVELS}:{COARSE_LEVELS}"
        return f"{self.name}-v{self.version}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"

    def embed(self, patches: list[np.ndarray]) -> np.ndarray:
        if not patches:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([describe_lines(p, self.work_size) for p in patches])
