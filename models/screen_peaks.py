"""Periodic screens (dots or lines on a lattice, any angle) as peaks of the page's power
spectrum, and the page with them notched out: step 1 of descreening (models/descreen.py).

A lattice of period p at angle a peaks at frequency 1/p in direction a (dot screens twice,
90 degrees apart), plus harmonics. The spectrum is averaged over tiles (Welch); a peak is
a local maximum standing PEAK_RATIO above the spectrum's local median, above the
content's low frequencies. Strokes are broadband, so notching the peaks and their
harmonics out of the page's spectrum removes the screens and keeps the strokes
(Hoffmann, "FFT descreening").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft, ndimage

TILE = 128  # Welch tile side (frequency resolution 1/128 cycles per pixel)
MAX_TILES = 48  # tiles averaged at most
MIN_FREQUENCY = 1.0 / 24  # peaks below this (periods above 24 px) are content, not screens
MAX_FREQUENCY = 1.0 / 2.5  # finer than 2.5 px a screen is not resolved (and pixel-grid effects peak)
RING_RADIUS, RING_RATIO = 3, 4.0  # a peak stands RING_RATIO above its ring (see _isolated)
PEAK_RATIO = 12.0  # a screen peak (or harmonic) stands this far above its spectral neighborhood's median
SCREEN_RATIO = 30.0  # a page has a periodic screen when some peak stands this far (fundamentals: 40-250)
PEAK_BACKGROUND = 11  # bins of the median filter estimating that neighborhood
NOTCH_SIGMA = 1.5 / TILE  # Gaussian notch width (cycles per pixel)
HARMONICS = 3  # multiples of each peak notched too


@dataclass
class ScreenPeak:
    period: float  # pixels
    angle: float  # degrees, in [-90, 90)
    strength: float  # peak over neighborhood median (power ratio)
    fx: float = field(repr=False, default=0.0)  # cycles per pixel
    fy: float = field(repr=False, default=0.0)

    def describe(self) -> dict:
        return {"period": round(self.period, 2), "angle": round(self.angle, 1), "strength": round(self.strength, 1)}


def welch_spectrum(gray: np.ndarray) -> np.ndarray:
    """Mean power spectrum of Hann-windowed TILE x TILE tiles (50% overlap); rows are
    fftshifted (fy from -1/2), columns are rfft (fx from 0). Zero when the page is smaller
    than a tile."""
    h, w = gray.shape
    if h < TILE or w < TILE:
        return np.zeros((TILE, TILE // 2 + 1))
    window = np.outer(np.hanning(TILE), np.hanning(TILE)).astype(np.float32)
    ys = range(0, h - TILE + 1, TILE // 2)
    xs = range(0, w - TILE + 1, TILE // 2)
    corners = [(y, x) for y in ys for x in xs]
    corners = corners[:: max(1, len(corners) // MAX_TILES)]  # evenly spread: enough to see any screen
    tiles = np.stack([gray[y:y + TILE, x:x + TILE] for y, x in corners]).astype(np.float32)
    tiles -= tiles.mean(axis=(1, 2), keepdims=True)
    power = np.abs(fft.rfft2(tiles * window, workers=1)) ** 2
    return np.fft.fftshift(power.mean(axis=0), axes=0)


def detect_screen_peaks(gray: np.ndarray) -> list[ScreenPeak]:
    """Spectral peaks of periodic screens, strongest first."""
    power = welch_spectrum(gray)
    if not power.any():
        return []
    log_power = np.log(power + 1e-6)
    background = ndimage.median_filter(log_power, size=PEAK_BACKGROUND, mode="nearest")
    fy = (np.arange(TILE) - TILE // 2) / TILE
    fx = np.arange(TILE // 2 + 1) / TILE
    fyy, fxx = np.meshgrid(fy, fx, indexing="ij")
    radius = np.hypot(fxx, fyy)
    is_max = log_power == ndimage.maximum_filter(log_power, size=5, mode="nearest")
    excess = log_power - background
    found = is_max & (excess > np.log(PEAK_RATIO)) & (radius >= MIN_FREQUENCY) & (radius <= MAX_FREQUENCY)
    found &= _isolated(log_power)
    # fx == 0 column: keep one of each conjugate pair (fy > 0).
    found[:, 0] &= fyy[:, 0] > 0
    found &= ~_content_harmonics(found, excess, fxx, fyy)
    peaks = []
    for y, x in zip(*np.nonzero(found)):
        f = float(radius[y, x])
        angle = float(np.degrees(np.arctan2(fyy[y, x], fxx[y, x])))
        angle = (angle + 90.0) % 180.0 - 90.0
        peaks.append(ScreenPeak(1.0 / f, angle, float(np.exp(excess[y, x])), float(fxx[y, x]), float(fyy[y, x])))
    peaks.sort(key=lambda p: -p.strength)
    # Weak peaks alone are regular content (parallel strokes, hatching); with a screen they
    # are its harmonics.
    return peaks if peaks and peaks[0].strength >= SCREEN_RATIO else []


ALIASES = [(0, 0)] + [(ax, ay) for ax in (-1, 0, 1) for ay in (-1, 0, 1) if (ax, ay) != (0, 0)]


def _content_harmonics(found: np.ndarray, excess: np.ndarray, fxx: np.ndarray, fyy: np.ndarray) -> np.ndarray:
    """Peaks that are harmonics of a fundamental below MIN_FREQUENCY: a drawn pattern with a
    long period (stripes every 30 px) has harmonics in the screen band, but a screen's own
    fundamental is in the band. A peak at f is the k-th harmonic of f0 = f/k (k = 2, 3, ...,
    f0 below the band) when the spectrum peaks at f0 too (SCREEN_RATIO above its
    neighborhood) and at all but one of the multiples of f0 up to f (PEAK_RATIO): a
    harmonic series, which the page's own low frequencies next to a screen are not."""
    drop = np.zeros_like(found)
    rows, cols = excess.shape

    def excess_near(fx: float, fy: float) -> float:
        fx, fy = (fx + 0.5) % 1.0 - 0.5, (fy + 0.5) % 1.0 - 0.5  # aliased frequencies wrap
        if fx < 0:  # the spectrum holds fx >= 0: the conjugate
            fx, fy = -fx, -fy
        by, bx = fy * TILE + TILE // 2, fx * TILE
        window = excess[max(0, int(np.floor(by))):min(rows, int(np.floor(by)) + 2),
                        max(0, int(np.floor(bx))):min(cols, int(np.floor(bx)) + 2)]
        return float(window.max()) if window.size else -np.inf

    for y, x in zip(*np.nonzero(found)):
        for ax, ay in ALIASES:  # the peak may be an aliased harmonic: k f0 = f + (ax, ay)
            fx, fy = float(fxx[y, x]) + ax, float(fyy[y, x]) + ay
            f = float(np.hypot(fx, fy))
            for k in range(2, int(f * TILE / 2) + 1):
                if f / k >= MIN_FREQUENCY:
                    continue
                if excess_near(fx / k, fy / k) < np.log(SCREEN_RATIO):
                    continue
                series = sum(excess_near(j * fx / k, j * fy / k) > np.log(PEAK_RATIO) for j in range(2, k))
                if series >= k - 3:
                    drop[y, x] = True
                    break
            if drop[y, x]:
                break
    return drop


def _isolated(log_power: np.ndarray) -> np.ndarray:
    """Bins standing RING_RATIO above the second-highest of 16 bins RING_RADIUS away: a
    lattice peak is a point, while a long straight stroke spreads its energy along a ridge
    (two ring bins on it stay high)."""
    rows, cols = log_power.shape
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = []
    for a in angles:
        dy, dx = int(round(RING_RADIUS * np.sin(a))), int(round(RING_RADIUS * np.cos(a)))
        shifted = np.roll(log_power, -dy, axis=0)
        xs = np.clip(np.arange(cols) + dx, 0, cols - 1)
        ring.append(shifted[:, xs])
    second = np.sort(np.stack(ring), axis=0)[-2]
    return log_power - second > np.log(RING_RATIO)


def notch(gray: np.ndarray, peaks: list[ScreenPeak]) -> np.ndarray:
    """The page without the peaks' frequencies (and HARMONICS multiples of them):
    Gaussian notches in its rfft spectrum, each applied on a small window of bins."""
    if not peaks:
        return gray.astype(np.float32)
    h, w = gray.shape
    spectrum = fft.rfft2(gray.astype(np.float32), workers=1)
    keep = np.ones(spectrum.shape, np.float32)
    reach_y, reach_x = int(np.ceil(4 * NOTCH_SIGMA * h)), int(np.ceil(4 * NOTCH_SIGMA * w))
    magnitude = np.abs(spectrum)
    for peak in peaks:
        for k in range(1, HARMONICS + 1):
            # Aliased harmonics wrap around: frequencies are taken modulo 1.
            ux = (k * peak.fx + 0.5) % 1.0 - 0.5
            uy = (k * peak.fy + 0.5) % 1.0 - 0.5
            if ux < 0:  # rfft stores fx >= 0: use the conjugate
                ux, uy = -ux, -uy
            if np.hypot(ux, uy) < MIN_FREQUENCY:  # aliased next to the page's content: keep it
                continue
            bx, by = _refine(magnitude, ux * w, uy * h, 1.0 / TILE * w, 1.0 / TILE * h)
            _notch_at(keep, bx, by, NOTCH_SIGMA * w, NOTCH_SIGMA * h, reach_x, reach_y)
    return fft.irfft2(spectrum * keep, s=(h, w), workers=1).astype(np.float32)


def _refine(magnitude: np.ndarray, bx: float, by: float, rx: float, ry: float) -> tuple[float, float]:
    """The strongest bin within (rx, ry) bins of (bx, by): the Welch grid locates a peak to
    a tile bin only, the page's own spectrum resolves it (a screen's exact period and angle)."""
    rows, cols = magnitude.shape
    xs = np.arange(max(0, int(bx - rx)), min(cols, int(bx + rx) + 2))
    ys = np.arange(int(by - ry), int(by + ry) + 2)
    if not len(xs):
        return bx, by
    window = magnitude[np.ix_(ys % rows, xs)]
    y, x = np.unravel_index(int(np.argmax(window)), window.shape)
    return float(xs[x]), float(ys[y])


def _notch_at(keep: np.ndarray, bx: float, by: float, sx: float, sy: float, reach_x: int, reach_y: int) -> None:
    """Multiply `keep` by 1 - Gaussian around bin (bx, by) (by may be negative: rows wrap)."""
    rows, cols = keep.shape
    xs = np.arange(max(0, int(bx) - reach_x), min(cols, int(bx) + reach_x + 2))
    ys = np.arange(int(by) - reach_y, int(by) + reach_y + 2)
    if not len(xs):
        return
    gy = np.exp(-((ys - by) ** 2) / (2 * sy * sy))[:, None]
    gx = np.exp(-((xs - bx) ** 2) / (2 * sx * sx))[None, :]
    keep[np.ix_(ys % rows, xs)] *= (1.0 - gy * gx).astype(np.float32)
