"""Speech balloons with lettering: found without weights, kept as paper with black text."""

from __future__ import annotations

import cv2
import numpy as np

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
