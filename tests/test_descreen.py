"""Screentone detection and descreening on pages printed here with known screens."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from chromaflow.models.descreen import descreen, detect_screen_peaks, white_balanced
from chromaflow.models.page_styles import COLOR, GRAY, LINE, TONE, classify_page
from chromaflow.models.synth_screens import Screen, scan_degrade, tone_page
from synthetic import PALETTES, draw_character

GRAY_LEVEL = 150  # the tone patch's gray: 41% coverage


def patch_page(screen: Screen, stroke: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A 400 x 400 page: a gray square printed with `screen`, a black stroke across it.
    Returns (page RGB, mask of the square away from the stroke)."""
    color = np.full((400, 400, 3), 255, np.uint8)
    color[80:320, 80:320] = GRAY_LEVEL
    if stroke:
        cv2.line(color, (40, 200), (360, 210), (0, 0, 0), 5)
    page, _ = tone_page(color, np.random.default_rng(1), [screen])
    inside = np.zeros((400, 400), bool)
    inside[100:300, 100:300] = True
    inside[185:225] = False
    return page, inside


def gray_of(page: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(white_balanced(page), cv2.COLOR_RGB2GRAY)


def angle_diff(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return min(d, period - d)


@pytest.mark.parametrize("kind,period,angle", [("dots", 6.0, 30.0), ("dots", 9.0, 0.0), ("lines", 5.0, 60.0)])
def test_screen_period_and_angle_are_found(kind, period, angle):
    page, _ = patch_page(Screen(kind, period, angle))
    peaks = detect_screen_peaks(gray_of(page))
    assert peaks
    # The strongest peak is a fundamental (or, for dots, the same lattice 90 degrees off).
    best = peaks[0]
    assert abs(best.period - period) < 0.35 * period / 6, (best, period)
    assert angle_diff(best.angle, angle, 90.0 if kind == "dots" else 180.0) < 4.0, (best, angle)


@pytest.mark.parametrize("kind", ["dots", "lines", "noise"])
def test_descreened_tone_is_flat_and_the_stroke_stays(kind):
    page, inside = patch_page(Screen(kind, 7.0, 45.0))
    raw = gray_of(page).astype(np.float32)
    flat = descreen(raw).gray
    assert raw[inside].std() > 60  # the screen: black and white pixels
    assert flat[inside].std() < 12, flat[inside].std()
    assert abs(flat[inside].mean() - GRAY_LEVEL) < 20
    stroke = flat[200:210, 60:340]
    assert np.median(stroke.min(axis=0)) < 60  # the stroke crossing the tone is still black
    assert flat[20:60, 20:380].mean() > 245  # paper stays paper


def test_line_art_has_no_screen():
    page = draw_character(PALETTES["alice"], colored=False)
    gray = gray_of(page)
    assert detect_screen_peaks(gray) == []
    result = descreen(gray)
    assert result.texture_share < 0.005
    assert np.abs(result.gray - gray).max() < 1.0  # nothing to do: the page is unchanged


def test_page_styles():
    line = draw_character(PALETTES["alice"], colored=False)
    color = draw_character(PALETTES["alice"])
    gray = cv2.cvtColor(cv2.cvtColor(color, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    toned, _ = tone_page(color, np.random.default_rng(3), [Screen("dots", 6.0, 45.0)])
    assert classify_page(line) == LINE
    assert classify_page(color) == COLOR
    assert classify_page(gray) == GRAY
    assert classify_page(toned) == TONE
    # A scan: yellowed paper, grain, JPEG, a slight turn: still tone, not color.
    scanned, _ = scan_degrade(toned, np.random.default_rng(4))
    assert classify_page(scanned) == TONE
    yellowed = np.clip(line.astype(np.float32) * np.array([1.0, 0.96, 0.85]), 0, 255).astype(np.uint8)
    assert classify_page(yellowed) == LINE


def test_noise_screen_is_tone_and_lettering_is_not_texture():
    color = draw_character(PALETTES["bob"])
    toned, _ = tone_page(color, np.random.default_rng(5), [Screen("noise", 6.0, 0.0)])
    assert classify_page(toned) == TONE
    page = draw_character(PALETTES["bob"], colored=False)
    for y in range(30, 120, 22):  # lines of small text on a line-art page
        cv2.putText(page, "HELLO THERE, HOW ARE YOU", (20, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    assert classify_page(page) == LINE
