"""Metric functions on hand-made arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from chromaflow.models import metrics as M

WHITE, RED, BLUE, BLACK = (255, 255, 255), (220, 30, 30), (30, 60, 220), (0, 0, 0)


def canvas(h=40, w=40, color=WHITE):
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = color
    return img


def square_lines(h=40, w=40, box=(10, 10, 30, 30)):
    """Line art: a closed 1-px black square outline on white (0 = ink)."""
    lines = np.full((h, w), 255, np.uint8)
    x0, y0, x1, y1 = box
    lines[y0, x0:x1 + 1] = 0
    lines[y1, x0:x1 + 1] = 0
    lines[y0:y1 + 1, x0] = 0
    lines[y0:y1 + 1, x1] = 0
    return lines


def test_delta_e_matches_skimage_on_distinct_colors():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    expected = deltaE_ciede2000(rgb2lab(a), rgb2lab(b))
    np.testing.assert_allclose(M.delta_e(a, b), expected, atol=1e-9)
    assert np.all(M.delta_e(a, a) == 0)


def test_background_is_border_connected_near_white_only():
    gt = canvas()
    gt[10:31, 10:31] = BLACK
    gt[12:29, 12:29] = WHITE  # white inside a closed black ring: foreground (eye white)
    lines = np.full((40, 40), 255, np.uint8)
    bg = M.background_mask(gt, lines)
    assert bg[0, 0] and bg[39, 39] and bg[5, 20]
    assert not bg[20, 20]  # enclosed white is not background
    assert not bg[10, 10]  # the ring is not near-white


def test_flat_color_accuracy_counts_foreground_non_line_pixels():
    lines = square_lines()
    gt = canvas()
    gt[11:30, 11:30] = RED  # 19 x 19 foreground interior
    pred = canvas()
    pred[11:30, 11:20] = RED  # 9 of 19 columns right
    fg, bg = M.flat_color_accuracy(pred, gt, lines)
    assert fg == pytest.approx(9 / 19)
    assert bg == 1.0
    fg, bg = M.flat_color_accuracy(gt, gt, lines)
    assert (fg, bg) == (1.0, 1.0)
    # Painting the background wrong is reported separately, never in the headline.
    wrong_bg = gt.copy()
    wrong_bg[:5] = BLUE
    fg, bg = M.flat_color_accuracy(wrong_bg, gt, lines)
    assert fg == 1.0 and bg == pytest.approx(1 - 5 * 40 / M.background_mask(gt, lines).sum())


def test_segment_accuracy_count_and_pixel_weighted():
    # Two closed segments: a big square (19x19 interior) and a small one (5x5 interior).
    lines = square_lines(box=(2, 2, 22, 22))
    small = square_lines(box=(28, 28, 34, 34))
    lines = np.minimum(lines, small)
    gt = canvas()
    gt[3:22, 3:22] = RED
    gt[29:34, 29:34] = BLUE
    pred = gt.copy()
    pred[29:34, 29:34] = RED  # small segment wrong
    acc, pix_acc, n = M.segment_accuracy(pred, gt, lines)
    assert n == 2
    assert acc == pytest.approx(0.5)
    assert pix_acc == pytest.approx(19 * 19 / (19 * 19 + 5 * 5))


def test_psnr_and_ssim_known_values():
    gt = canvas(color=(100, 100, 100))
    assert M.psnr(gt, gt) == 100.0
    assert M.psnr(gt + 1, gt) == pytest.approx(10 * math.log10(255 ** 2))
    assert M.ssim(gt, gt) == pytest.approx(1.0)


def test_line_scores_with_two_pixel_tolerance():
    true = np.full((30, 30), 255, np.uint8)
    true[15, 5:25] = 0
    shifted = np.full((30, 30), 255, np.uint8)
    shifted[17, 5:25] = 0  # 2 px off: within tolerance
    assert M.line_scores(shifted, true)["f1"] == pytest.approx(1.0)
    far = np.full((30, 30), 255, np.uint8)
    far[22, 5:25] = 0
    assert M.line_scores(far, true)["f1"] == 0.0
    half = np.full((30, 30), 255, np.uint8)
    half[15, 5:15] = 0  # perfect precision; recall: 10 drawn + 2 within tolerance of 20
    s = M.line_scores(half, true)
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(12 / 20)


def test_pair_metrics_rejects_size_mismatch():
    with pytest.raises(ValueError, match="sizes differ"):
        M.pair_metrics(canvas(10, 10), canvas(12, 10), np.full((12, 10), 255, np.uint8))
