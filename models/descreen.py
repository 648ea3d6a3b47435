"""Screentone detection and removal (descreening) on gray manga pages, weight-free.

Printed manga renders gray as halftone screens: dots or lines on a lattice (AM screens,
any angle, periods of ~3-12 px at scan resolution) or random grains (FM / noise screens).
Segmenting such a page as it is makes every dot a region. Descreening turns every screened
area into one flat gray while the strokes stay crisp:

1. **Periodic screens** are peaks of the page's power spectrum, notched out of it
   (models/screen_peaks.py): strokes are broadband and stay.
2. **What is left** (noise screens, which have no peak: dense grains; and the residue of
   periodic ones, where the notched-out screen had energy) is smoothed by a normalized
   convolution that ignores the stroke pixels, so tones become flat without strokes
   bleeding into them.

Both steps see several screens on one page. The page's paper is white-balanced first
(yellowed paper, scanner casts).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .screen_peaks import ScreenPeak, detect_screen_peaks, notch

INK_LEVEL = 30  # after notching (1-px blur), darker than this is ink: strokes and solid blacks, never smoothed
SCREEN_LEVEL = 8.0  # rms (gray levels) of a notched-out screen where it counts as screened paper
SPECK_AREA = 20  # grains of a noise screen: dark specks or light holes up to this many pixels
CLUMP_FILL, CLUMP_ASPECT = 0.45, 2.5  # a grain (a speck that counts as a light grain) is this compact
MIN_SPECK_DENSITY, SPECK_SHARE = 0.03, 0.4  # or: light grains, yet most of their phase (letters: dots only)
SPECK_DENSITY = 0.08  # noise screen: share of the pixels around that are grains
GRAIN_RUN = 4.5  # dense noise screen: mean run (px, as measured by grain_zone) of its longer phase below this
GRAIN_EDGE_DENSITY = 0.25  # and dark/light transitions per pixel above this (a 5-px stroke: <= 0.17)
# A noise screen whose grains touch (clumped_zone): runs of its longer phase below CLUMP_RUN
# px, transitions on CLUMP_EDGE_DENSITY of the pixels (strokes: ~0.1; a noise screen at
# 25 % coverage with 3-px grains: 0.17-0.29), CLUMP_SPECKS of its minority phase in specks.
CLUMP_RUN, CLUMP_EDGE_DENSITY, CLUMP_SPECKS = 8.0, 0.15, 0.005
CLUMP_MIN_SHARE = 0.01  # and it covers at least this share of the page (crowded fine lines: eyes, lashes: ~0.003)
CLUMP_KEPT = 3.0  # and its texture (rms) is this many times what the notches took out there
TEXTURE_SIGMA = 6.0  # window of those measures (px)
MIN_SMOOTHING = 2.5  # residue smoothing sigma (px); periodic screens use 0.45 x period if larger
GRAIN_SMOOTHING = 4.0  # noise-screen smoothing sigma (px), at least
GRAIN_STROKE_RUNS = 1.5  # in a dense noise zone a stroke is dark over a disk this many grain runs wide
GRAIN_SIGMA_PER_RUN = 2.5  # dense noise: sigma per px of grain run (the mean of ~40 grains: rms ~1/6 of the grains')
GRAIN_ZONE_INK_AREA = 160  # in grain zones, dark clumps smaller than this are grains, not strokes
REGION_SCREEN_SHARE = 0.3  # a closed region this much in a sparse grain zone is screened whole
PAPER_PERCENTILE = 99.0  # the paper's color is this percentile of each channel's PAPER_BLOCK means
PAPER_BLOCK = 8  # px: block means average a screen's bright gaps with its dots (JPEG makes the gaps less yellow than paper)


@dataclass
class Descreened:
    gray: np.ndarray  # float32 H x W, 0..255: the page with screens flattened, strokes kept
    peaks: list[ScreenPeak]  # the periodic screens' spectral peaks (fundamentals and harmonics)
    textured: np.ndarray  # bool H x W: where the page was textured (screened) before

    @property
    def texture_share(self) -> float:
        return float(self.textured.mean())


@dataclass
class PageTone:
    """A tone page as descreening left it, for the steps after line extraction (which
    run elsewhere and see crops of the page): its gray with the screens flattened, and for
    the page's notes the screens found and the share of the page they covered."""

    gray: np.ndarray  # uint8 H x W
    screens: list[dict]  # ScreenPeak.describe() of the strongest peaks
    texture_share: float

    @classmethod
    def of(cls, result: Descreened) -> "PageTone":
        gray = np.clip(result.gray + 0.5, 0, 255).astype(np.uint8)
        return cls(gray, [p.describe() for p in result.peaks[:8]], result.texture_share)


def white_balanced(rgb: np.ndarray) -> np.ndarray:
    """The page with its paper made white: every channel divided by the PAPER_PERCENTILE
    of its PAPER_BLOCK x PAPER_BLOCK block means (yellowed paper, a scanner's cast). Block
    means, not pixels: on a close-up page mostly screened, the gaps between the dots are
    the brightest pixels, and JPEG's chroma subsampling has mixed them with the black dots;
    paper they are not. uint8 RGB."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    blocks = rgb
    if min(h, w) >= 4 * PAPER_BLOCK:
        blocks = cv2.resize(rgb, (w // PAPER_BLOCK, h // PAPER_BLOCK), interpolation=cv2.INTER_AREA)
    sample = blocks.reshape(-1, 3).astype(np.float32)
    paper = np.maximum(np.percentile(sample, PAPER_PERCENTILE, axis=0), 32.0)  # an all-dark page keeps its levels
    # One lookup table per channel: 256 values to scale instead of every pixel.
    table = np.clip(np.arange(256, dtype=np.float32)[:, None] * (255.0 / paper) + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(rgb, table.reshape(256, 1, 3))


def window_mean(img: np.ndarray) -> np.ndarray:
    """Mean over a Gaussian window of TEXTURE_SIGMA, computed at half resolution: such a
    wide window's mean is smooth, and the texture measures take several per page."""
    h, w = img.shape
    small = cv2.resize(img.astype(np.float32), ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), TEXTURE_SIGMA / 2), (w, h), interpolation=cv2.INTER_LINEAR)


def normalized_blur(img: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian average of img over the pixels where weight > 0 (normalized convolution)."""
    num = cv2.GaussianBlur(img * weight, (0, 0), sigma)
    den = cv2.GaussianBlur(weight, (0, 0), sigma)
    return num / np.maximum(den, 1e-3)


def _small_components(mask: np.ndarray, max_area: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Components of at most `max_area` pixels. Returns (mask of them, mask of the compact
    ones: at least CLUMP_FILL of their box, box aspect <= CLUMP_ASPECT, i.e. grains, not
    pieces of a thin stroke broken by downscaling, which are long or diagonal; their areas)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA]
    box_w, box_h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    compact = (area >= CLUMP_FILL * box_w * box_h) & (np.maximum(box_w, box_h) <= CLUMP_ASPECT * np.minimum(box_w, box_h))
    small = area <= max_area
    small[0] = False
    compact &= small
    return small[labels], compact[labels], area[1:][small[1:]]


def screen_residue(gray: np.ndarray, notched: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Where the notched-out periodic screens had energy (rms above SCREEN_LEVEL) and more
    of it than the notched page keeps in its own fine detail: strokes and letters are
    broadband, the notches take a little of their energy but most of it stays."""
    removed = gray - notched
    near_ink = cv2.dilate(ink.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    removed[near_ink] = 0.0
    energy = window_mean(removed * removed)
    detail = notched - cv2.GaussianBlur(notched, (0, 0), 1.5)
    kept = window_mean(detail * detail)
    return (energy > SCREEN_LEVEL ** 2) & (energy > kept) & ~ink


MIN_INK_AREA = 40  # dark specks smaller than this (px) are grains of a noise screen, not strokes


def stroke_mask(notched: np.ndarray, sparse: np.ndarray, dense: np.ndarray, grain: tuple[float, float]
                ) -> np.ndarray:
    """Strokes and solid blacks of a notched page: dark after a 1-px blur, opened by a
    3x3 cross, without specks smaller than MIN_INK_AREA. Inside grain zones (`sparse`,
    `dense`; `grain`: their grain sizes) grains clump and stick to the strokes: there a
    stroke is what a disk GRAIN_STROKE_RUNS grains wide fits in, and in sparse zones a
    component of GRAIN_ZONE_INK_AREA or more.""" 
    dark = (cv2.GaussianBlur(notched, (0, 0), 1.0) < INK_LEVEL).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    for zone, size in ((dense, grain[1]),):  # sparse grains are specks, the area test below takes them
        if zone.any() and size > 0:
            side = max(3, 2 * int(round(GRAIN_STROKE_RUNS * size / 2)) + 1)
            disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
            dark = np.where(zone, cv2.morphologyEx(dark, cv2.MORPH_OPEN, disk), dark)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA]
    in_grain = _label_sums(labels, count, sparse) > 0.5 * area
    keep = (area >= MIN_INK_AREA) & (~in_grain | (area >= GRAIN_ZONE_INK_AREA))
    keep[0] = False
    return keep[labels]


def grain_zone(gray: np.ndarray, removed: np.ndarray | None = None,
               lettering: Callable[[], np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Where grains are dense (a noise screen, which has no spectral peak): dark specks or
    light holes (up to SPECK_AREA) on SPECK_DENSITY of the pixels around, or compact ones on
    MIN_SPECK_DENSITY making SPECK_SHARE of their phase (sparse grains), or a fine texture (dense grains, which percolate into big clusters): both
    phases of the thresholded page cut into runs shorter than GRAIN_RUN on average, with
    dark/light transitions on GRAIN_EDGE_DENSITY of the pixels. A stroke has one long
    phase (the paper beside it), lettering runs longer than grains. `removed`: the
    energy the notches took out (window_mean of the squared difference; None: no
    periodic screen); where a periodic screen was notched out (above SCREEN_LEVEL) its
    residue is no dense noise screen. Grains that touch (a noise screen of medium
    coverage, clumped_zone) join the sparse zone on light screens and the dense zone on
    dark ones (`lettering`: the page's speech balloons, asked for when needed). Returns (sparse zone, dense
    zone, their grain sizes in px: the specks' median side, the dense zone's median run;
    0 where a zone is empty). The grain size sets the smoothing and the stroke test."""
    dark = gray < 128
    d = dark.astype(np.float32)
    dark_share = window_mean(d)
    sparse = np.zeros(dark.shape, bool)
    speck_areas, phase_specks = [], []
    for phase in (dark, ~dark):  # dark grains on paper, light holes in a dark screen
        small, compact, areas = _small_components(phase, SPECK_AREA)
        speck_areas.append(areas)
        phase_specks.append(small)
        specks, grains = window_mean(small), window_mean(compact)
        share = dark_share if phase is dark else 1.0 - dark_share
        sparse |= (specks > SPECK_DENSITY) | ((grains > MIN_SPECK_DENSITY) & (grains > SPECK_SHARE * share))
    # Clumps bigger than the speck rule leave holes in a grain zone: a screen covers an area.
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(TEXTURE_SIGMA) + 1,) * 2)
    sparse = cv2.morphologyEx(sparse.astype(np.uint8), cv2.MORPH_CLOSE, disk) > 0
    edges = np.zeros_like(d)
    edges[:-1] += np.abs(np.diff(d, axis=0))
    edges[:, :-1] += np.abs(np.diff(d, axis=1))
    edge_density = window_mean(edges)
    # Mean run of the longer phase: its share over the transitions per pixel (x and y).
    run = 2.0 * np.maximum(dark_share, 1.0 - dark_share) / np.maximum(edge_density, 1e-3)
    dense = (run < GRAIN_RUN) & (edge_density > GRAIN_EDGE_DENSITY)
    if removed is not None:
        dense &= removed <= SCREEN_LEVEL ** 2
    # A screen covers an area: what a disk of a window's size does not fit in is a knot of strokes.
    dense = cv2.morphologyEx(dense.astype(np.uint8), cv2.MORPH_OPEN, disk) > 0
    clumped = cv2.morphologyEx(((run < CLUMP_RUN) & (edge_density > CLUMP_EDGE_DENSITY)).astype(np.uint8),
                               cv2.MORPH_OPEN, disk) > 0
    if clumped.any():  # most line pages have no candidate: their measures are not needed
        mean = window_mean(gray)
        kept = np.maximum(window_mean(gray * gray) - mean * mean, 0.0)  # the texture's energy (variance)
        light_screen, dark_screen = clumped_zone(clumped, dark, *phase_specks, kept,
                                                 np.zeros_like(kept) if removed is None else removed, lettering)
        # Dark grains on paper clump into pieces, and a stroke is a piece bigger than they
        # are (the sparse zone's test); light holes in a dark screen leave the dark phase
        # one piece, where a stroke is what a disk wider than the dark runs fits in (the
        # dense zone's).
        sparse |= light_screen
        dense |= dark_screen
    areas = np.concatenate(speck_areas)
    # The grain a speck pixel belongs to (area-weighted median): fragments do not count.
    speck_side = float(np.sqrt(np.sort(areas)[np.searchsorted(np.cumsum(np.sort(areas)), areas.sum() / 2)])
                       ) if sparse.any() and len(areas) else 0.0
    return sparse, dense, (speck_side, float(np.median(run[dense])) if dense.any() else 0.0)


def clumped_zone(candidate: np.ndarray, dark: np.ndarray, dark_specks: np.ndarray, light_specks: np.ndarray,
                 kept: np.ndarray, removed: np.ndarray, lettering: Callable[[], np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The parts of `candidate` (texture with runs shorter than CLUMP_RUN and transitions
    on CLUMP_EDGE_DENSITY of the pixels) that are a noise screen whose grains touch.
    Between ~20 and ~80 % coverage a noise screen's grains clump into pieces bigger than
    SPECK_AREA, and its runs are longer than GRAIN_RUN, so neither grain rule above sees
    it. What else has such runs, and how it is told apart:
    - strokes crowding (a drawn eye, hair): some of a screen's grains stay apart, and at
      least CLUMP_SPECKS of a part's minority phase (dark grains on light, light holes
      in dark) are specks (whole strokes: none; a noise screen at ~50 % coverage,
      where both phases percolate: 0.02 on the dev set);
    - the residue of notched periodic screens (two dot screens on one face leave a
      texture that crosses mid-gray): the notches took out most of its energy, while a
      noise screen is broadband and keeps nearly all of its own; the part's texture
      energy left (`kept`, the notched page's local variance) is at least CLUMP_KEPT
      times the energy the notches took out (`removed`) (dev set: noise screens 7-90 x
      in rms, residues 0.6-2.2 x);
    - fine strokes crowding (lashes, stubble) break into specks, but a screen covers an
      area: a part must cover CLUMP_MIN_SHARE of the page (a frame's eyes: ~0.3 % each);
    - lettering, whose small letters and a scan's dust are specks too: parts in the
      page's speech balloons (`lettering()`, asked only when some part passed) are not
      screens.
    Returns (the parts that are light screens, dark grains their minority; the parts
    that are dark screens)."""
    measures = (dark, dark_specks, light_specks, kept, removed)
    screen, light = _clumped_parts(candidate, *measures)
    if screen.any() and lettering is not None:
        screen, light = _clumped_parts(candidate & ~lettering(), *measures)
    return screen & light, screen & ~light


def _clumped_parts(candidate: np.ndarray, dark: np.ndarray, dark_specks: np.ndarray, light_specks: np.ndarray,
                   kept: np.ndarray, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the connected parts of `candidate` that pass the area, speck and energy tests of
    clumped_zone, the parts at most half dark)."""
    count, parts = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
    per_part = functools.partial(_label_sums, parts, count)
    area = np.bincount(parts.ravel(), minlength=count).astype(np.float64)
    dark_area = per_part(dark)
    light = dark_area <= area / 2
    speck_share = np.where(light, per_part(dark_specks) / np.maximum(dark_area, 1.0),
                           per_part(light_specks) / np.maximum(area - dark_area, 1.0))
    broadband = per_part(kept) >= CLUMP_KEPT ** 2 * per_part(removed)
    screen = (area >= CLUMP_MIN_SHARE * candidate.size) & (speck_share >= CLUMP_SPECKS) & broadband
    screen[0] = False
    return screen[parts], light[parts]


def _label_sums(labels: np.ndarray, count: int, mask: np.ndarray) -> np.ndarray:
    """Per label of `labels` (0 .. count - 1): how many of its pixels `mask` holds."""
    return np.bincount(labels.ravel(), weights=mask.ravel().astype(np.float64), minlength=count)


def _zone_box(zone: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The zone's bounding box grown by `margin` (smoothing a small zone costs little)."""
    ys, xs = np.nonzero(zone.any(axis=1))[0], np.nonzero(zone.any(axis=0))[0]
    h, w = zone.shape
    return (slice(max(0, ys[0] - margin), min(h, ys[-1] + margin + 1)),
            slice(max(0, xs[0] - margin), min(w, xs[-1] + margin + 1)))


def screened_regions(zone: np.ndarray, ink: np.ndarray, periodic: np.ndarray | None = None,
                     lettering: Callable[[], np.ndarray] | None = None) -> np.ndarray:
    """`zone` grown to the whole of every closed region (bounded by `ink`) it covers
    REGION_SCREEN_SHARE of: screentone is laid region by region, and where a light noise
    screen's grains clump past the speck rule its zone has holes, left as specks (a face
    half flat, half speckled). Not grown: regions mostly under a periodic screen
    (`periodic`: where the notches took one out; their specks are the dots the notches
    left, and the residue rule smooths them), and regions mostly in the page's speech
    balloons (`lettering()`, asked only when some region would grow): grown, a balloon
    would lose all its letters."""
    count, labels = cv2.connectedComponents((~ink).astype(np.uint8), connectivity=4)
    share = functools.partial(_label_sums, labels, count)
    area = np.maximum(np.bincount(labels.ravel(), minlength=count), 1)
    whole = share(zone) >= REGION_SCREEN_SHARE * area
    if periodic is not None:
        whole &= share(periodic) < 0.5 * area
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    whole[border] = False  # the paper around the drawing is no region
    whole[0] = False  # the ink
    if whole.any() and lettering is not None:
        whole &= share(lettering()) < 0.5 * area
    return zone | (whole[labels] & ~ink)


def descreen(gray: np.ndarray, peaks: list[ScreenPeak] | None = None,
             lettering: Callable[[], np.ndarray] | None = None) -> Descreened:
    """Flatten the page's screens (see the module docstring). `gray`: uint8 or float, 0..255,
    white-balanced; `peaks`: from detect_screen_peaks (computed when None); `lettering`:
    the mask of the page's speech balloons, called only if a noise screen's texture is found
    (models/page_styles.py `descreen_page` passes it). A page is
    descreened once, by line extraction: what the colorizer needs of it travels as
    PageTone (the lines stage stores it, the colorize stage hands crops of it on)."""
    gray = gray.astype(np.float32)
    return _descreen(gray, detect_screen_peaks(gray) if peaks is None else peaks, lettering)


def _descreen(gray: np.ndarray, peaks: list[ScreenPeak], lettering: Callable[[], np.ndarray] | None
              ) -> Descreened:
    notched = notch(gray, peaks)
    removed = window_mean((gray - notched) ** 2) if peaks else None  # where the notches took a screen out
    lettering = None if lettering is None else functools.cache(lettering)  # asked by two rules, found once
    sparse, dense, grain = grain_zone(notched, removed, lettering)
    if not peaks and not sparse.any() and not dense.any():  # a clean page: nothing to flatten
        return Descreened(np.clip(notched, 0, 255), peaks, np.zeros(gray.shape, bool))
    ink = stroke_mask(notched, sparse, dense, grain)
    if sparse.any():
        grown = screened_regions(sparse, ink, None if removed is None else removed > SCREEN_LEVEL ** 2, lettering)
        if grown.sum() > sparse.sum():
            sparse = grown
            ink = stroke_mask(notched, sparse, dense, grain)
    out = notched.copy()
    weight = (~ink).astype(np.float32)
    longest_period = max((p.period for p in peaks), default=0.0)
    textured = np.zeros(gray.shape, bool)
    for zone, sigma in ((screen_residue(gray, notched, ink), max(MIN_SMOOTHING, 0.45 * longest_period)),
                        (sparse & ~dense & ~ink, max(GRAIN_SMOOTHING, GRAIN_SIGMA_PER_RUN * grain[0])),
                        (dense & ~ink, max(GRAIN_SMOOTHING, GRAIN_SIGMA_PER_RUN * grain[1]))):
        if zone.any():
            box = _zone_box(zone, int(3 * sigma) + 4)
            smooth = normalized_blur(notched[box], weight[box], sigma)
            # Feathered, so the smoothed tone meets the rest without a seam.
            blend = cv2.GaussianBlur(zone[box].astype(np.float32), (0, 0), 1.5)
            out[box] = out[box] * (1.0 - blend) + smooth * blend
            textured |= zone
    out[ink] = notched[ink]
    return Descreened(np.clip(out, 0, 255), peaks, textured)
