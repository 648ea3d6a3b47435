"""Panel detection on line art."""

from __future__ import annotations

import cv2
import numpy as np

from chromaflow.models.panels import find_panels, panels_or_page
from synthetic import PALETTES, draw_character


def test_panels_found_in_reading_order():
    page = np.full((400, 300), 255, np.uint8)
    cv2.rectangle(page, (10, 10), (289, 190), 0, 3)   # top panel
    cv2.rectangle(page, (10, 210), (140, 389), 0, 3)  # bottom left
    cv2.rectangle(page, (160, 210), (289, 389), 0, 3)  # bottom right
    cv2.circle(page, (150, 100), 40, 0, 2)  # a drawing inside the top panel is not a panel
    cv2.circle(page, (75, 300), 30, 0, 2)
    cv2.circle(page, (225, 300), 30, 0, 2)
    cv2.rectangle(page, (195, 30), (280, 180), 0, 2)  # a big empty box in a panel: part of a drawing
    panels = find_panels(page)
    assert len(panels) == 3
    top, first, second = panels
    assert top[1] < 20 and top[3] < 200
    assert first[0] > 150 and second[0] < 20  # manga order: right before left
    for x0, y0, x1, y1 in panels:
        assert (page[y0:y1, x0:x1] == 0).mean() < 0.1  # frame strokes stay outside the crop


def test_frameless_drawing_is_one_panel():
    art = cv2.cvtColor(draw_character(PALETTES["alice"], colored=False, frame=False), cv2.COLOR_RGB2GRAY)
    assert find_panels(art) == []
    assert panels_or_page(art) == [(0, 0, art.shape[1], art.shape[0])]

