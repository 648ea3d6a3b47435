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


# ------------------------------------------------------------------ thresholds and edge cases
NEAR_RED = (220, 73, 30)  # CIEDE2000 7.8 from RED: right (threshold 10)
FAR_RED = (220, 88, 30)  # CIEDE2000 12.0 from RED: wrong
OFF_WHITE = (255, 255, 245)  # CIEDE2000 4.8 from white: near-white (threshold 6)
CREAM = (255, 255, 240)  # CIEDE2000 6.9 from white: a color
ALMOST_WHITE = (255, 255, 243)  # CIEDE2000 5.7 from white: still near-white
PALE_GREEN = (235, 242, 235)  # CIEDE2000 6.05 from white (a color), 5.95 from (254, 254, 254)
JUST_RIGHT = (220, 80, 30)  # CIEDE2000 9.64 from RED
JUST_WRONG = (220, 83, 30)  # CIEDE2000 10.50 from RED


def _de(a, b) -> float:
    """CIEDE2000 with skimage directly (the oracle for the test colors)."""
    return float(deltaE_ciede2000(rgb2lab(np.array([[a]], np.uint8)), rgb2lab(np.array([[b]], np.uint8)))[0, 0])


def test_test_colors_sit_on_both_sides_of_the_thresholds():
    assert 7 < _de(NEAR_RED, RED) < 9 and 11 < _de(FAR_RED, RED) < 13
    assert 4 < _de(OFF_WHITE, WHITE) < 5.5 < _de(ALMOST_WHITE, WHITE) < 6 < _de(CREAM, WHITE) < 8
    assert _de(PALE_GREEN, (254, 254, 254)) < 6 < _de(PALE_GREEN, WHITE) < 6.1
    assert 9.5 < _de(JUST_RIGHT, RED) < 10 < _de(JUST_WRONG, RED) < 10.6


def test_accuracy_threshold_is_ten_within_half_a_unit():
    """Colors 0.4 and 0.5 either side of 10 (a threshold of 9 or 11 fails)."""
    lines = np.minimum(square_lines(box=(2, 2, 22, 22)), square_lines(box=(26, 26, 36, 36)))
    gt = canvas()
    gt[3:22, 3:22] = RED
    gt[27:36, 27:36] = RED
    pred = gt.copy()
    pred[3:22, 3:22] = JUST_RIGHT
    pred[27:36, 27:36] = JUST_WRONG
    fg = M.flat_color_accuracy(pred, gt, lines)[0]
    assert fg == pytest.approx(19 * 19 / (19 * 19 + 9 * 9))
    acc, pix_acc, n = M.segment_accuracy(pred, gt, lines)
    assert n == 2 and acc == 0.5 and pix_acc == pytest.approx(fg)


def test_flat_color_accuracy_threshold_between_delta_e_8_and_12():
    """A fill 8 off counts as right, 12 off as wrong: a threshold moved to 2 or to 40 fails."""
    lines = square_lines()
    gt = canvas()
    gt[11:30, 11:30] = RED
    near, far = gt.copy(), gt.copy()
    near[11:30, 11:30] = NEAR_RED
    far[11:30, 11:30] = FAR_RED
    assert M.flat_color_accuracy(near, gt, lines)[0] == 1.0
    assert M.flat_color_accuracy(far, gt, lines)[0] == 0.0
    half = gt.copy()
    half[11:30, 11:20] = NEAR_RED
    half[11:30, 20:30] = FAR_RED
    assert M.flat_color_accuracy(half, gt, lines)[0] == pytest.approx(9 / 19)


def test_segment_accuracy_threshold_between_delta_e_8_and_12():
    lines = np.minimum(square_lines(box=(2, 2, 22, 22)), square_lines(box=(26, 26, 36, 36)))
    gt = canvas()
    gt[3:22, 3:22] = RED
    gt[27:36, 27:36] = BLUE
    pred = gt.copy()
    pred[3:22, 3:22] = NEAR_RED  # right
    pred[27:36, 27:36] = BLUE
    assert M.segment_accuracy(pred, gt, lines)[:2] == (1.0, 1.0)
    pred[3:22, 3:22] = FAR_RED  # wrong: the big segment
    acc, pix_acc, n = M.segment_accuracy(pred, gt, lines)
    assert n == 2 and acc == 0.5 and pix_acc == pytest.approx(9 * 9 / (19 * 19 + 9 * 9))
    # the segment's median color decides: a minority of wrong pixels does not
    pred[3:22, 3:22] = RED
    pred[3:8, 3:22] = FAR_RED  # 5 of 19 rows
    assert M.segment_accuracy(pred, gt, lines)[0] == 1.0


def test_near_white_threshold_decides_background():
    lines = np.full((20, 20), 255, np.uint8)
    assert M.background_mask(canvas(20, 20, OFF_WHITE), lines).all()
    assert M.background_mask(canvas(20, 20, ALMOST_WHITE), lines).all()
    assert not M.background_mask(canvas(20, 20, CREAM), lines).any()
    assert not M.background_mask(canvas(20, 20, PALE_GREEN), lines).any()  # measured from pure white


def test_line_threshold_boundary():
    lines = np.full((4, 4), 255, np.uint8)
    lines[0, 0], lines[0, 1] = 199, 200  # anti-aliased fringes up to 199 are line
    mask = M.line_mask(lines)
    assert mask[0, 0] and not mask[0, 1] and mask.sum() == 1
    rgb = np.repeat(lines[..., None], 3, axis=2)
    np.testing.assert_array_equal(M.line_mask(rgb), mask)


def test_empty_foreground_background_and_segments_are_nan():
    white = canvas(20, 20)
    no_lines = np.full((20, 20), 255, np.uint8)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN by rule, not by a 0/0
        fg, bg = M.flat_color_accuracy(white, white, no_lines)  # all background: no foreground pixel
    assert math.isnan(fg) and bg == 1.0
    all_ink = np.zeros((20, 20), np.uint8)
    fg, bg = M.flat_color_accuracy(white, white, all_ink)  # nothing but line pixels
    assert math.isnan(fg) and math.isnan(bg)
    acc, pix_acc, n = M.segment_accuracy(white, white, no_lines)  # the one segment is background
    assert math.isnan(acc) and math.isnan(pix_acc) and n == 0
    scores = M.pair_metrics(white, white, no_lines)
    assert math.isnan(scores["flat_color_accuracy"]) and scores["segments"] == 0 and scores["psnr"] == 100.0
    red = canvas(20, 20, RED)  # no near-white pixel at all: no background
    fg, bg = M.flat_color_accuracy(red, red, no_lines)
    assert fg == 1.0 and math.isnan(bg)


def test_mostly_background_segments_and_specks_are_excluded():
    """Segments half or more ground-truth background are left out (the line art's paper
    around a drawing); less than half stays. Segments under 8 pixels are specks."""
    lines = np.minimum(square_lines(box=(2, 2, 12, 12)), square_lines(box=(16, 2, 26, 12)))
    lines = np.minimum(lines, square_lines(box=(30, 2, 33, 5)))  # 2x2 = 4-px interior: a speck
    gt = canvas()  # white, so the ground truth's white connects to the border through the strokes
    gt[3:12, 3:7] = RED  # left box: 4 of 9 columns colored, 5 background -> excluded
    gt[3:12, 17:22] = BLUE  # right box: 5 of 9 colored, 4 background -> kept
    gt[3:5, 31:33] = RED
    bg = M.background_mask(gt, lines)
    assert bg[3:12, 7:12].all() and not bg[3:12, 3:7].any() and bg[3:12, 22:26].all()
    pred = gt.copy()
    pred[3:12, 17:22] = RED  # the kept segment wrong
    pred[3:12, 3:7] = BLUE  # the excluded one wrong too: it does not count
    pred[3:5, 31:33] = BLUE  # the speck: does not count
    acc, pix_acc, n = M.segment_accuracy(pred, gt, lines)
    # only the right box counts (the paper around the boxes is background too)
    assert n == 1 and acc == 0.0 and pix_acc == 0.0
    pred[3:12, 17:26] = gt[3:12, 17:26]
    assert M.segment_accuracy(pred, gt, lines)[:3] == (1.0, 1.0, 1)


def test_delta_e_of_color_lists_and_broadcast():
    colors = np.array([[RED, NEAR_RED, FAR_RED]], np.uint8)
    de = M.delta_e(colors, np.array(RED, np.uint8))
    np.testing.assert_allclose(de[0], [0.0, _de(NEAR_RED, RED), _de(FAR_RED, RED)], atol=1e-9)


def _result(identity, kind, **metrics):
    from chromaflow.models.evaluation import METRIC_KEYS, PairResult

    values = {key: metrics.get(key, 0.0) for key in METRIC_KEYS}
    return PairResult("region", identity, kind, "view", ["ref"], values, 0.1, None)


def test_aggregate_means_skip_nan_and_split_by_identity():
    from chromaflow.models.evaluation import aggregate, aggregate_kinds

    results = [
        _result("alice", "pose", flat_color_accuracy=0.5, psnr=20.0),
        _result("alice", "pose", flat_color_accuracy=float("nan"), psnr=30.0),
        _result("bob", "recolor", flat_color_accuracy=1.0, psnr=40.0, segment_accuracy=float("nan")),
    ]
    summary = aggregate(results, line_f1=0.8, line_f1_gray=0.7)
    assert summary["flat_color_accuracy"] == pytest.approx(0.75)  # mean of 0.5 and 1.0; NaN skipped
    assert summary["psnr"] == pytest.approx(30.0) and summary["pairs"] == 3
    assert summary["segment_accuracy"] == 0.0  # 0, 0 and a NaN
    assert (summary["line_f1"], summary["line_f1_gray"]) == (0.8, 0.7)
    assert list(summary["identities"]) == ["alice", "bob"]
    alice, bob = summary["identities"]["alice"], summary["identities"]["bob"]
    assert alice["flat_color_accuracy"] == 0.5 and alice["psnr"] == 25.0 and alice["pairs"] == 2
    assert bob["pairs"] == 1 and math.isnan(bob["segment_accuracy"])  # only NaN: NaN, not 0
    kinds = aggregate_kinds(results)
    assert kinds["pose"]["pairs"] == 2 and kinds["recolor"]["psnr"] == 40.0
    assert math.isnan(aggregate([], 0.0, 0.0)["psnr"])


# ------------------------------------------------------------------ found by `make mutate`
def test_delta_e_each_channel_of_each_color_counts():
    """One image holding every (pred, gt) pair where one of the six channels takes a value
    from 0..255 and the rest are 0: each pair's CIEDE2000 must be its own."""
    values = (1, 2, 7, 64, 127, 128, 200, 255)
    a, b = [], []
    for channel in range(6):
        for v in values:
            pair = np.zeros(6, np.uint8)
            pair[channel] = v
            a.append(pair[:3])
            b.append(pair[3:])
    a, b = np.array([a], np.uint8), np.array([b], np.uint8)
    np.testing.assert_allclose(M.delta_e(a, b), deltaE_ciede2000(rgb2lab(a), rgb2lab(b)), atol=1e-9)


def test_delta_e_pair_keys_never_collide():
    """Each (pred, gt) color pair is computed once: the packed key must keep every channel of
    both colors apart (colors that differ only in one channel, or whose bits would overlap
    if a channel were shifted one bit too far)."""
    a = np.array([[(0, 1, 0), (0, 0, 128), (0, 0, 0), (0, 0, 0), (0, 0, 0),
                   (0, 0, 1), (0, 0, 0), (9, 9, 9), (9, 9, 9), (1, 0, 0), (0, 128, 0),
                   (5, 5, 5), (5, 5, 5)]], np.uint8)
    b = np.array([[(0, 0, 0), (0, 0, 0), (10, 0, 0), (20, 0, 0), (0, 0, 30),
                   (0, 0, 0), (128, 0, 0), (1, 0, 0), (0, 128, 0), (0, 0, 0), (0, 0, 0),
                   (0, 1, 0), (0, 0, 128)]], np.uint8)
    expected = deltaE_ciede2000(rgb2lab(a), rgb2lab(b))
    np.testing.assert_allclose(M.delta_e(a, b), expected, atol=1e-9)
    assert len(set(np.round(expected[0], 6))) == expected.shape[1]


def test_background_reaches_each_border_alone():
    """Near-white that touches only the top (or bottom, left, right) edge is background."""
    lines = np.full((20, 20), 255, np.uint8)
    for side in ("top", "bottom", "left", "right"):
        gt = canvas(20, 20, RED)
        opening = {"top": (slice(0, 10), slice(8, 12)), "bottom": (slice(10, 20), slice(8, 12)),
                   "left": (slice(8, 12), slice(0, 10)), "right": (slice(8, 12), slice(10, 20))}[side]
        gt[opening] = WHITE
        assert M.background_mask(gt, lines)[opening].all(), side
        enclosed = gt.copy()
        edge = {"top": (0, slice(8, 12)), "bottom": (19, slice(8, 12)),
                "left": (slice(8, 12), 0), "right": (slice(8, 12), 19)}[side]
        enclosed[edge] = RED  # the same white, cut off from the border: foreground
        assert not M.background_mask(enclosed, lines).any(), side


def test_segments_of_eight_pixels_count_seven_do_not():
    lines = np.minimum(square_lines(box=(2, 2, 5, 7)), square_lines(box=(10, 2, 12, 10)))  # 2x4 and 1x7 inside
    gt = canvas()
    gt[3:7, 3:5] = RED
    gt[3:10, 11:12] = BLUE
    acc, pix_acc, n = M.segment_accuracy(gt, gt, lines)
    assert n == 1 and acc == 1.0
    pred = gt.copy()
    pred[3:7, 3:5] = BLUE  # the 8-pixel segment wrong: it counts
    assert M.segment_accuracy(pred, gt, lines)[:3] == (0.0, 0.0, 1)


def test_segment_exactly_half_background_is_excluded():
    """Kept only when less than half of it is ground-truth background."""
    lines = square_lines(box=(2, 2, 11, 12))  # 8 columns x 9 rows inside
    gt = canvas()
    gt[3:12, 3:7] = RED  # 4 of 8 columns colored, 4 background
    bg = M.background_mask(gt, lines)
    assert bg[3:12, 7:11].all() and not bg[3:12, 3:7].any()
    assert M.segment_accuracy(gt, gt, lines)[2] == 0
    gt[3:12, 7] = RED  # 5 of 8 columns colored: kept
    assert M.segment_accuracy(gt, gt, lines)[2] == 1


def test_no_segment_gives_nan_without_warnings():
    import warnings

    white = canvas(20, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" on the way to NaN
        acc, pix_acc, n = M.segment_accuracy(white, white, np.full((20, 20), 255, np.uint8))
    assert math.isnan(acc) and math.isnan(pix_acc) and n == 0


def test_psnr_squares_the_error_and_caps_at_100():
    import warnings

    gt = canvas(color=(100, 100, 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # identical images: 100 by rule, not log10(x / 0)
        assert M.psnr(gt, gt) == 100.0
    assert M.psnr(gt + 2, gt) == pytest.approx(10 * math.log10(255 ** 2 / 4))
    big = np.full((300, 300, 3), 100, np.uint8)
    near = big.copy()
    near[0, 0, 0] = 101  # mse 1/270000: 102.4 dB uncapped
    assert M.psnr(near, big) == 100.0


def test_line_scores_ink_threshold_and_empty_cases():
    blank = np.full((20, 20), 255, np.uint8)
    drawn = blank.copy()
    drawn[10, 2:18] = 127  # darkest half of the range: ink
    assert M.line_scores(blank, blank) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert M.line_scores(drawn, blank) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert M.line_scores(blank, drawn) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert M.line_scores(drawn, drawn)["f1"] == 1.0
    faint = blank.copy()
    faint[10, 2:18] = 128  # not ink, in the prediction or in the truth
    assert M.line_scores(faint, blank)["f1"] == 1.0 and M.line_scores(blank, faint)["f1"] == 1.0


def test_line_scores_precision_below_one():
    true = np.full((30, 30), 255, np.uint8)
    true[15, 5:25] = 0
    pred = true.copy()
    pred[3, 5:25] = 0  # a second, wrong stroke far away: half the predicted ink is wrong
    s = M.line_scores(pred, true)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == 1.0
    assert s["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    true[27, 5:25] = 0  # a true stroke the prediction misses: recall 1/2 too
    s = M.line_scores(pred, true)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(0.5)


def test_ssim_uses_the_uint8_range():
    """SSIM with data_range 255 (uint8), as skimage defines it: the constants C1, C2 scale
    with the range, so another range gives another value for the same images."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(2)
    gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-40, 41, gt.shape), 0, 255).astype(np.uint8)
    expected = structural_similarity(gt, pred, channel_axis=2, data_range=255)
    assert M.ssim(pred, gt) == pytest.approx(expected, abs=1e-12)
    assert abs(structural_similarity(gt, pred, channel_axis=2, data_range=254) - expected) > 1e-6
