"""Line extraction: line art, color pages with thick strokes, gray pages."""

from __future__ import annotations

import cv2
import numpy as np

from chromaflow.conf import LinesConfig
from chromaflow.models.lines import COLOR, GRAY, LINE, classify_page, extract_lines
from chromaflow.models.metrics import line_scores
from synthetic import PALETTES, draw_character


def test_classify_page_kinds():
    line = draw_character(PALETTES["alice"], colored=False)
    color = draw_character(PALETTES["alice"], colored=True)
    gray = cv2.cvtColor(cv2.cvtColor(color, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert classify_page(line) == LINE
    assert classify_page(color) == COLOR
    assert classify_page(gray) == GRAY


def test_line_art_keeps_its_strokes():
    line = draw_character(PALETTES["alice"], colored=False)
    art = extract_lines(line)
    assert art.kind == LINE and art.lines.shape == line.shape[:2]
    truth = cv2.cvtColor(line, cv2.COLOR_RGB2GRAY)
    assert line_scores(art.lines, truth)["f1"] > 0.97


def test_color_page_thick_strokes_are_ink_not_outlines():
    """XDoG alone traces both edges of a thick stroke; the dark core must be ink too."""
    img = np.full((400, 400, 3), 255, np.uint8)  # strokes 2.5% of the side, like OpenMoji's
    cv2.circle(img, (200, 200), 120, (240, 200, 40), -1)
    cv2.circle(img, (200, 200), 120, (0, 0, 0), 10)
    truth = np.full((400, 400), 255, np.uint8)
    cv2.circle(truth, (200, 200), 120, 0, 10)
    scores = line_scores(extract_lines(img).lines, truth)
    assert scores["recall"] > 0.95 and scores["precision"] > 0.9


def test_color_page_wide_dark_fill_keeps_only_its_outline():
    img = np.full((300, 300, 3), 255, np.uint8)
    cv2.rectangle(img, (40, 40), (260, 260), (230, 80, 80), -1)
    cv2.circle(img, (150, 150), 70, (10, 10, 10), -1)  # black hair-like fill, not a stroke
    lines = extract_lines(img).lines
    assert lines[150, 150] == 255  # inside of the fill is paper
    assert lines[150, 150 - 69] == 0  # its rim is an outline


def test_close_up_strokes_are_ink_and_its_black_hair_a_fill():
    """A close-up reference (1024 px): its outline zoomed to 56 px wide (half-width 28, over
    the page-size rule's 25.6) is ink through and through; black hair 250 px tall beside it
    (half-width 125, ~4.5 strokes) is still a fill with an outline ring."""
    img = np.full((1024, 1024, 3), 255, np.uint8)
    cv2.circle(img, (512, 560), 400, (240, 200, 40), -1)
    cv2.rectangle(img, (362, 250), (662, 500), (0, 0, 0), -1)  # the hair, inside the face
    cv2.circle(img, (512, 560), 400, (0, 0, 0), 56)
    lines = extract_lines(img, LinesConfig(work_size=1024)).lines
    assert (lines[560, 112 - 20:112 + 20] == 0).all()  # across the stroke: all ink
    assert lines[375, 512] == 255  # the hair's middle: a fill
    assert lines[375, 364] == 0  # its ring: outline


def test_color_page_solid_fill_rules_by_hand():
    """A 400-px color page with 3-px strokes (a face circle, r 150: the strokes' ridge is
    ~940 px, half-width ~2): a black dot of half-width 8 is under the page-size rule's
    0.025 x 400 = 10 and stays ink through; a black 120-px square (half-width 60) is a fill
    whose outline ring is 0.012 x 400 = 4.8 px wide: ink 3 px in, paper 9 px in."""
    img = np.full((400, 400, 3), 255, np.uint8)
    cv2.circle(img, (200, 200), 150, (240, 200, 40), -1)
    cv2.circle(img, (200, 200), 150, (0, 0, 0), 3)
    cv2.circle(img, (200, 120), 8, (0, 0, 0), -1)  # the dot
    cv2.rectangle(img, (150, 150), (269, 269), (0, 0, 0), -1)  # the square
    lines = extract_lines(img, LinesConfig(work_size=400)).lines
    assert lines[120, 200] == 0
    assert lines[210, 153] == 0 and lines[210, 159] == 255 and lines[210, 210] == 255


def test_gray_page_solid_black_stays_ink():
    img = np.full((300, 300, 3), 230, np.uint8)
    img[:, 150:] = 150  # mid-gray shading: a gray page, not two-toned line art
    cv2.circle(img, (150, 150), 70, (10, 10, 10), -1)
    art = extract_lines(img)
    assert art.kind == GRAY
    assert art.lines[150, 150] == 0
