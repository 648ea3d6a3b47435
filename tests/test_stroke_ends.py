"""Stroke ends and the joins between them (models/stroke_ends.py), and the regions they
close off (segmentation.split_at_closures), checked on hand-drawn cases."""

from __future__ import annotations

import cv2
import numpy as np

from chromaflow.models.segmentation import segment_line_art, split_at_closures
from chromaflow.models.stroke_ends import closing_joins, open_edges, stroke_ends


def _ink(*lines: tuple[tuple[int, int], tuple[int, int]], size: int = 300, width: int = 6) -> np.ndarray:
    img = np.zeros((size, size), np.uint8)
    for (x0, y0), (x1, y1) in lines:
        cv2.line(img, (x0, y0), (x1, y1), 1, width)
    return img > 0


def test_a_straight_stroke_has_two_ends_pointing_out_of_it():
    points, directions, width = stroke_ends(_ink(((40, 150), (240, 150))))
    assert 5 <= width <= 9  # drawn 6 px wide (OpenCV's thick line is ~7 px)
    order = np.argsort(points[:, 1])
    left, right = points[order]
    assert abs(left[0] - 150) <= 1 and 37 <= left[1] <= 45
    assert abs(right[0] - 150) <= 1 and 235 <= right[1] <= 243
    np.testing.assert_allclose(directions[order], [[0, -1], [0, 1]], atol=0.2)  # skeletons bend at caps


def test_a_dot_has_no_ends():
    ink = np.zeros((100, 100), bool)
    cv2.circle(ink.view(np.uint8), (50, 50), 4, 1, -1)
    assert len(stroke_ends(ink)[0]) == 0


def test_two_lines_of_one_stroke_that_stop_side_by_side_are_capped():
    # an arm: two lines 30 px apart joined at the top (the hand), ending at y = 200
    joins = closing_joins(_ink(((100, 60), (100, 200)), ((130, 60), (130, 200)), ((100, 60), (130, 60))))
    assert joins[195:206, 104:127].any(axis=0).all()
    assert not joins[:190].any()  # nothing between the lines, nothing at the closed end


def test_separate_parallel_strokes_are_not_capped():
    # speed lines or hatching: side by side, same direction, but paper between them
    assert not closing_joins(_ink(((100, 60), (100, 200)), ((130, 60), (130, 200)))).any()


def test_fanned_strokes_and_far_ends_are_not_capped():
    # whiskers: two 50-px strokes from one point fanning out 40 degrees; their tips are 34 px
    # (~5 widths) apart
    ink = _ink(((60, 150), (110, 150)), ((60, 150), (98, 118)))
    ends = stroke_ends(ink)[0]
    for tip in ((150, 110), (118, 98)):  # both tips are ends (within the cap's 4 px)
        assert np.hypot(*(ends - tip).T).min() <= 4, ends
    assert not closing_joins(ink).any()
    # a tube 100 px wide (~14 widths): too wide for a cap
    assert not closing_joins(_ink(((100, 60), (100, 200)), ((200, 60), (200, 200)), ((100, 60), (200, 60)))).any()


def test_a_join_never_crosses_a_stroke():
    ink = _ink(((100, 60), (100, 200)), ((130, 60), (130, 200)), ((100, 60), (130, 60)), ((115, 190), (115, 280)))
    joins = closing_joins(ink)
    assert not joins[195:206, 100:131].any()  # the middle stroke is in the way at the bottom


def test_open_edges_join_the_last_ends_of_a_part_drawn_open():
    # a shirt's two sides, both ending at y = 250, 120 px apart (~17 widths): one edge
    ink = _ink(((90, 100), (80, 250)), ((210, 100), (220, 250)))
    edges = open_edges(ink)
    assert edges[245:256, 100:200].any(axis=0).all()
    assert not closing_joins(ink)[240:256, 100:200].any()  # too wide to close the region
    # ends that point away from each other (one stroke's top end, the other's bottom end)
    # get no edge; the two bottom ends and the two top ends get theirs
    edges = open_edges(_ink(((100, 100), (100, 250)), ((200, 100), (200, 250))))
    assert not edges[160:191, 130:171].any()  # where both diagonals would cross
    assert edges[245:256, 110:190].any(axis=0).all() and edges[95:106, 110:190].any(axis=0).all()


def test_open_edges_take_each_end_once_and_skip_its_cap():
    # an arm (two lines joined at the top) beside a shirt side, all ending at y = 250:
    # the arm is capped; its inner end's edge goes to the shirt side, not back across the cap
    ink = _ink(((60, 100), (60, 250)), ((90, 100), (90, 250)), ((60, 100), (90, 100)),
               ((200, 100), (200, 250)))
    caps = closing_joins(ink)
    assert caps[245:256, 64:87].any(axis=0).all()
    edges = open_edges(ink)
    assert edges[245:256, 95:196].any(axis=0).all()  # inner arm end -> shirt side
    assert not edges[245:256, 64:87].any()  # not the cap again
    # five fingertips in a row: each tip joined once (two lines and a spare tip), no web
    tips = _ink(*[((x, 100), (x, 200)) for x in (60, 90, 120, 150, 180)], ((60, 200), (180, 200)))
    edges = open_edges(tips)
    count, _ = cv2.connectedComponents(edges.astype(np.uint8))
    assert count - 1 <= 3 and not edges[110:190].any()


def test_a_capped_arm_becomes_its_own_region_and_closed_regions_do_not_change():
    img = np.full((300, 300), 255, np.uint8)
    cv2.circle(img, (150, 80), 40, 0, 6)  # a head: closed
    cv2.line(img, (100, 130), (100, 260), 0, 6)  # an arm open at its bottom end
    cv2.line(img, (135, 130), (135, 260), 0, 6)
    cv2.line(img, (100, 130), (135, 130), 0, 6)
    seg = segment_line_art(img)
    arm = seg.labels[200, 117]
    assert seg.touches_border[arm]  # leaks into the paper through its open end
    split = split_at_closures(seg, closing_joins(img < 128))
    arm = split.labels[200, 117]
    assert arm > 0 and not split.touches_border[arm]
    assert split.joined[200, 117] and not split.joined[80, 150] and not split.joined[20, 20]
    assert split.labels[20, 20] != arm and split.touches_border[split.labels[20, 20]]
    head = seg.labels[80, 150]
    np.testing.assert_array_equal(split.labels == split.labels[80, 150], seg.labels == head)


def test_two_strokes_that_point_at_each_other_across_a_gap_are_bridged():
    """A line broken by a 30-px gap (~4 stroke widths): two strokes whose ends face each
    other are joined across the gap (the bridge rule: both ends point at the other)."""
    joins = closing_joins(_ink(((40, 150), (130, 150)), ((160, 150), (250, 150))))
    assert joins[145:156, 136:155].any(axis=0).all()
    assert not joins[:140].any() and not joins[160:].any()


def test_a_stroke_pointing_at_the_side_of_another_end_is_not_bridged():
    """Only ends that face each other are bridged: a horizontal stroke stops 30 px left of
    where a vertical stroke ends, pointing at that end from the side (the vertical end
    points down, across the join: cos 0.3 < GAP_COSINE)."""
    ink = _ink(((40, 150), (130, 150)), ((160, 60), (160, 140)))
    assert not closing_joins(ink).any()
