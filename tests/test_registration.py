"""models/registration.py pieces against hand-computed cases (the end-to-end framing cases
are in test_region_robustness.py)."""

from __future__ import annotations

import cv2
import numpy as np

from chromaflow.models.registration import Strokes, evidence, local_fit, register


def test_a_drawing_is_cut_when_its_strokes_run_off_its_image():
    whole = np.zeros((100, 100), bool)
    whole[20:80, 20:23] = True  # a stroke inside the image
    assert not Strokes(whole).cut
    for side in (np.s_[0:3, 40:60], np.s_[97:100, 40:60], np.s_[40:60, 0:3], np.s_[40:60, 97:100]):
        cut = whole.copy()
        cut[side] = True  # 20 border pixels of 400 on ink: 5 % > CUT_SHARE
        assert Strokes(cut).cut
    speck = whole.copy()
    speck[0, 50] = True  # one border pixel (0.25 %) is not a cut
    assert not Strokes(speck).cut


def test_evidence_by_hand():
    distance, inside, covered = np.array([2.0, 8.0, 2.0]), np.array([1.0, 1.0, 1.0]), np.array([0.25, 1.0, 0.25])
    chance = 10.0
    # (2 - 10) * sqrt(0.25) = -4; (8 - 10) * 1 = -2: the close, partial frame wins when the
    # reference is cut (a close-up) ...
    np.testing.assert_allclose(evidence((distance, inside, covered), chance, ref_whole=False), [-4.0, -2.0, -4.0])
    # ... and a whole reference pays chance per uncovered page stroke share: -4 + 7.5 = 3.5.
    np.testing.assert_allclose(evidence((distance, inside, covered), chance, ref_whole=True), [3.5, -2.0, 3.5])


def test_an_empty_reference_has_no_fit():
    page = np.zeros((64, 64), bool)
    page[10:50, 30:33] = True
    registration = register(page, np.zeros((64, 64), bool))
    assert registration.global_fit == 0.0
    assert registration.fit.max() == 0.0


def test_local_fit_is_one_on_agreeing_strokes_zero_on_disagreeing_and_reaches_inside_regions():
    """A 400-px page: a square outline; the reference's strokes lie on the left and top
    sides, 40 px off the right side and absent at the bottom. The fit is ~1 along the
    agreeing sides, ~0 along the disagreeing one, and inside the square, farther than the
    window reaches from any stroke, it is the nearest strokes' fit."""
    page = np.zeros((400, 400), bool)
    cv2.rectangle(page.view(np.uint8), (20, 20), (379, 379), 1, 2)
    page = page.astype(bool)
    ref = np.zeros((400, 400), bool)
    ref[19:22, 20:380] = True  # top side, as drawn
    ref[20:380, 19:22] = True  # left side, as drawn
    ref[20:380, 338:341] = True  # "right side" 40 px inside
    fit = local_fit(Strokes(page), ref, np.ones((400, 400), bool))
    assert fit[20, 200] > 0.95 and fit[200, 20] > 0.95  # top, left: agree
    assert fit[200, 379] < 0.1  # right: the reference's stroke is 40 px away (tolerance ~5)
    # Inside, 100 px from the top and left sides (beyond the window's reach, where the fit
    # was 0): theirs; 100 px from the right and bottom sides: theirs, ~0.
    assert fit[120, 120] > 0.9 and fit[280, 280] < 0.1
    # ... and nothing outside the covered area
    covered = np.zeros((400, 400), bool)
    covered[:, :200] = True
    assert local_fit(Strokes(page), ref, covered)[:, 200:].max() == 0.0


def test_global_fit_is_high_for_the_same_drawing_and_low_for_another():
    page = np.zeros((200, 200), np.uint8)
    cv2.circle(page, (100, 90), 50, 1, 2)
    cv2.rectangle(page, (60, 150), (140, 190), 1, 2)
    other = np.zeros((200, 200), np.uint8)
    for y in range(20, 200, 45):  # stripes: nothing like the page
        cv2.line(other, (10, y), (190, y + 30), 1, 2)
    same = register(page.astype(bool), page.astype(bool))
    assert same.global_fit > 0.95
    assert register(page.astype(bool), other.astype(bool)).global_fit < 0.7
