"""Speech balloons with lettering: found without weights, kept as paper with black text."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from chromaflow.models.colorizers.base import ColorizeRequest, Reference
from chromaflow.models.colorizers.region import RegionColorizer
from chromaflow.models.lettering import find_balloons
from chromaflow.models.lines import extract_lines
from chromaflow.models.segmentation import segment_line_art
from chromaflow.models.synth_balloons import add_balloon
from synthetic import PALETTES, draw_character

SIZE = (480, 480)


def balloon_page(seed: int = 0):
    line = draw_character(PALETTES["alice"], size=SIZE, colored=False, frame=False, dy=40, scale=0.8)
    truth = draw_character(PALETTES["alice"], size=SIZE, frame=False, dy=40, scale=0.8)
    return line, truth, add_balloon(line, truth, np.random.default_rng(seed))


def test_balloon_is_found_and_a_face_is_not():
    _, _, (page, _, balloon) = balloon_page()
    lines = extract_lines(page).lines
    seg = segment_line_art(lines)
    found = find_balloons(seg, lines, cv2.cvtColor(page, cv2.COLOR_RGB2GRAY))
    assert len(found.boxes) == 1
    x0, y0, x1, y1 = found.boxes[0]
    bx0, by0, bx1, by1 = balloon.box
    overlap = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
    assert overlap > 0.7 * (bx1 - bx0) * (by1 - by0)
    assert found.mask[balloon.interior].mean() > 0.95  # interior and letter holes are in it
    # The character's head (a closed region holding eyes) is no balloon.
    plain = draw_character(PALETTES["alice"], size=SIZE, colored=False, frame=False)
    plain_lines = extract_lines(plain).lines
    assert find_balloons(segment_line_art(plain_lines), plain_lines,
                         cv2.cvtColor(plain, cv2.COLOR_RGB2GRAY)).boxes == []


def test_balloon_keeps_paper_and_black_letters_in_the_colorized_page():
    _, _, (page, truth, balloon) = balloon_page(seed=2)
    # References: the same character colored, but with a big colored box where the
    # balloon is on the page (the reference's pose covers that spot).
    ref_color = draw_character(PALETTES["alice"], size=SIZE, frame=False, dy=40, scale=0.8)
    x0, y0, x1, y1 = balloon.box
    ref_color[y0:y1, x0:x1] = PALETTES["alice"]["body"]
    ref = Reference("alice", "a.png", ref_color, extract_lines(ref_color).lines, 1.0)
    art = extract_lines(page)
    request = ColorizeRequest("p1", page, art.lines, art.kind, [ref])
    out = RegionColorizer().colorize(request)
    interior = out[balloon.interior].astype(int)
    assert (interior.min(axis=1) >= 245).mean() > 0.99
    letters = out[balloon.letters].astype(int)
    assert (letters.max(axis=1) < 128).mean() > 0.9 and (np.ptp(letters, axis=1) < 30).mean() > 0.99
    assert request.diagnostics["balloons"] and request.diagnostics["style"] == "line"


def test_balloon_cut_by_the_page_edge_is_found():
    _, _, (page, _, balloon) = balloon_page()
    top = balloon.box[1] + 12
    cut = page[top:]  # the balloon's upper outline is off the page: its paper touches the edge
    lines = extract_lines(cut).lines
    seg = segment_line_art(lines)
    assert seg.touches_border[np.bincount(seg.labels[balloon.interior[top:]]).argmax()]
    found = find_balloons(seg, lines, cv2.cvtColor(cut, cv2.COLOR_RGB2GRAY))
    assert len(found.boxes) == 1
    assert found.mask[balloon.interior[top:]].mean() > 0.95


def test_panel_background_at_the_edge_with_a_caption_and_a_figure_is_no_balloon():
    # A panel in the page's corner: its paper touches the page edge and holds a caption
    # (text-like strokes) and a head. Taken for a balloon, the head would be painted paper.
    page = np.full((480, 480), 255, np.uint8)
    cv2.line(page, (0, 220), (220, 220), 0, 3)
    cv2.line(page, (220, 0), (220, 220), 0, 3)
    cv2.circle(page, (150, 130), 45, 0, 3)
    cv2.circle(page, (135, 120), 5, 0, -1)
    cv2.circle(page, (165, 120), 5, 0, -1)
    for row, text in enumerate(["HELLO", "THERE"]):
        cv2.putText(page, text, (12, 40 + 30 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 0, 2)
    found = find_balloons(segment_line_art(page), page, page)
    assert found.boxes == [] and not found.mask.any()


def _closed_region_holding(kind: str) -> np.ndarray:
    """A 480 px page with one closed ellipse (a balloon's outline) holding `kind` of ink."""
    page = np.full((480, 480), 255, np.uint8)
    cv2.ellipse(page, (240, 240), (170, 90), 0, 0, 360, 0, 3)
    if kind == "text":
        for row, text in enumerate(["WHERE IS", "EVERYONE?"]):
            cv2.putText(page, text, (120, 230 + 36 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 0, 2)
    elif kind == "specks":  # single-pixel specks in rows: too small to be glyphs
        for y in (220, 250):
            for x in range(130, 350, 12):
                page[y, x] = 0
    elif kind == "mixed":  # pieces in a row, but of very unequal heights
        for n, x in enumerate(range(130, 350, 20)):
            height = 4 if n % 2 else 34
            cv2.rectangle(page, (x, 240 - height // 2), (x + 4, 240 + height // 2), 0, -1)
    return page


@pytest.mark.parametrize("kind,is_balloon", [("text", True), ("specks", False), ("mixed", False)])
def test_a_closed_region_is_a_balloon_only_when_it_holds_lettering(kind, is_balloon):
    page = _closed_region_holding(kind)
    found = find_balloons(segment_line_art(page), page, page)
    assert (len(found.boxes) == 1) is is_balloon
