"""Region segmentation: gap closing, thin and colored strokes, reference regions."""

from __future__ import annotations

import cv2
import numpy as np

from scipy import ndimage

from chromaflow.models.correspondence import DESCRIPTOR_WEIGHTS, match_cost, region_descriptors, region_shapes
from chromaflow.models.segmentation import (
    build_color_table, fill_holes, quantize, segment_line_art, segment_reference, split_by_gray)


def test_gap_in_stroke_does_not_merge_regions():
    lines = np.full((120, 200), 255, np.uint8)
    cv2.rectangle(lines, (10, 10), (190, 110), 0, 3)
    lines[10:111, 99:102] = 0  # divider...
    lines[58:62, 99:102] = 255  # ...with a 4-px gap
    plain_count, _ = cv2.connectedComponents((lines > 127).astype(np.uint8), connectivity=4)
    seg = segment_line_art(lines, radius=3)
    left, right = seg.labels[60, 50], seg.labels[60, 150]
    assert plain_count - 1 == 2  # plain connectivity: inside + outside (leaks through the gap)
    assert left != right and left > 0 and right > 0
    assert not seg.touches_border[left] and seg.touches_border[seg.labels[2, 2]]
    # The gap itself belongs to one of the two sides, not to a third region.
    assert seg.labels[60, 100] in (left, right)


def test_one_pixel_diagonal_stroke_separates_regions():
    lines = np.full((50, 50), 255, np.uint8)
    for i in range(50):
        lines[i, i] = 0  # 8-connected 1-px diagonal
    seg = segment_line_art(lines, radius=1.5)
    assert seg.labels[5, 40] != seg.labels[40, 5]


def test_colored_trace_line_is_a_border():
    page = np.full((80, 80, 3), 255, np.uint8)
    cv2.rectangle(page, (5, 5), (75, 75), (0, 0, 0), 1)
    cv2.line(page, (5, 40), (75, 40), (255, 0, 0), 1)  # red shadow border
    from chromaflow.models.lines import extract_lines

    lines = extract_lines(page).lines
    seg = segment_line_art(lines, radius=1.5)
    assert seg.labels[20, 40] != seg.labels[60, 40]


def test_reference_regions_by_flat_color():
    ref = np.full((60, 60, 3), 255, np.uint8)
    ref[10:30, 10:50] = (200, 40, 60)
    ref[35:55, 10:50] = (40, 60, 190)
    ref[35:55, 28:31] = (0, 0, 0)
    lines = np.full((60, 60), 255, np.uint8)
    lines[35:55, 28:31] = 0
    palette = build_color_table([ref], [lines > 127])
    assert {tuple(c) for c in palette.rgb} == {(255, 255, 255), (200, 40, 60), (40, 60, 190)}
    index = quantize(ref, palette)
    assert tuple(palette.rgb[index[20, 20]]) == (200, 40, 60)
    seg, colors = segment_reference(ref, lines, palette)
    # white background, the red block, and the blue block split in two by the stroke
    assert seg.count - 1 == 4
    assert tuple(palette.rgb[colors[seg.labels[45, 15]]]) == (40, 60, 190)
    assert seg.labels[45, 15] != seg.labels[45, 45]


def test_coarse_pass_splits_a_fill_that_leaks_through_a_wide_gap():
    from chromaflow.models.segmentation import split_leaky_regions

    lines = np.full((200, 200), 255, np.uint8)
    cv2.rectangle(lines, (50, 50), (150, 150), 0, 3)
    lines[95:107, 148:153] = 255  # 12-px gap in the right side
    seg = segment_line_art(lines, radius=1.5)
    assert seg.labels[100, 100] == seg.labels[5, 5]  # the fine pass leaks: inside == outside
    split = split_leaky_regions(seg, radius=8)
    inside = split.labels[100, 100]
    assert inside != split.labels[5, 5] and not split.touches_border[inside]
    assert split.touches_border[split.labels[5, 5]]
    assert split_leaky_regions(seg, radius=0) is seg


def test_gray_level_step_without_a_stroke_splits_a_region():
    """A gray page: one closed region holding two flat grays (hair against skin, no stroke
    between them) becomes two regions; a smooth ramp-free region stays one."""
    lines = np.full((200, 200), 255, np.uint8)
    cv2.rectangle(lines, (20, 20), (180, 180), 0, 3)
    gray = np.full((200, 200), 255, np.uint8)
    gray[22:179, 22:100] = 200
    gray[22:179, 100:179] = 120
    gray[lines == 0] = 0
    seg = segment_line_art(lines, radius=1.5)
    assert seg.labels[100, 60] == seg.labels[100, 140]
    split = split_by_gray(seg, gray)
    assert split.labels[100, 60] != split.labels[100, 140]
    assert split.labels[100, 60] > 0 and split.labels[100, 140] > 0
    assert split.labels[5, 5] == split.labels[195, 195]  # the paper around stays one region
    flat = np.where(lines == 0, 0, 200).astype(np.uint8)
    assert split_by_gray(seg, flat).count == seg.count


def test_painting_like_reference_is_quantized():
    rng = np.random.default_rng(0)
    painting = cv2.GaussianBlur(rng.integers(0, 255, (120, 120, 3)).astype(np.uint8), (0, 0), 4)
    flat = np.full((120, 120, 3), 255, np.uint8)
    flat[30:90, 30:90] = (200, 40, 60)
    table = build_color_table([flat, painting], [np.ones((120, 120), bool)] * 2)
    assert table.unflat == [1]
    assert (200, 40, 60) in {tuple(c) for c in table.rgb}
    assert 4 <= len(table.rgb) <= 2 + 12


def test_fill_holes_matches_scipy_on_random_masks():
    rng = np.random.default_rng(3)
    for density in (0.4, 0.55, 0.7):
        mask = rng.random((60, 90)) < density
        expected = ndimage.binary_fill_holes(mask)
        assert (expected != mask).any()  # the masks have holes to fill
        assert np.array_equal(fill_holes(mask), expected)
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[3:6, 3:6] = False
    ring[4, 6] = False  # a hole open to the outside stays open
    assert np.array_equal(fill_holes(ring), ndimage.binary_fill_holes(ring))
    assert not fill_holes(ring)[4, 4]


def test_region_shapes_and_descriptors_by_hand():
    labels = np.zeros((10, 20), np.int32)
    labels[2:5, 3:9] = 1  # 3 x 6 box: center (5.5, 3), area 18
    labels[1, 2] = 3  # one pixel
    labels[6, 10] = labels[9, 19] = 4  # two pixels far apart: bbox 10 x 4, fill 2 / 40
    shapes = region_shapes(labels, 5)  # label 2 has no pixels
    assert np.allclose(shapes[1], [5.5, 3.0, 18, 6, 3, 0])
    assert np.allclose(shapes[2], 0)
    assert np.allclose(shapes[3], [2.0, 1.0, 1, 1, 1, 0])
    assert np.allclose(shapes[4], [14.5, 7.5, 2, 10, 4, 0])
    frame = (5.5, 3.0, 10.0, 0.3)  # a reference frame: center, size and its angle (unused here)
    desc = region_descriptors(shapes[1:], frame)
    assert np.allclose(desc[0], [0.0, 0.0, np.sqrt(18) / 10, 0.6, 0.3, 1.0, 0.0])
    assert np.isfinite(desc[1]).all() and np.allclose(desc[1, 2:], 0.0)  # no pixels: no size, not NaN
    assert np.allclose(desc[2], [-0.35, -0.2, 0.1, 0.1, 0.1, 1.0, 0.0])
    assert np.allclose(desc[3], [0.9, 0.45, np.sqrt(2) / 10, 1.0, 0.4, 2 / 40, 0.0])


def test_details_drawn_inside_a_region_are_counted_and_a_part_lying_over_it_is_not():
    labels = np.full((100, 100), 4, np.int32)  # paper (10000 px: details are 2 px or more)
    face = labels[10:50, 10:50]
    face[:] = 1  # a 40 x 40 face, 1600 px minus its holes
    face[5:8, 5:8] = 0  # an eye: ink
    face[5:8, 20:23] = 0  # the other eye: an ink ring with a 1-px highlight (region 3)
    face[6, 21] = 3
    face[30:34, 5:30] = 0  # an open mouth: 100 px of ink (more than 5 % of the face, ink all the same)
    face[20, 20] = 0  # a 1-px speck a screen left: not a detail
    face[0, :] = 0  # the outline on top, open to the paper: not a hole
    face[15:35, 32:39] = 0  # a hand lying over it: its outline ...
    face[16:34, 33:38] = 2  # ... around 90 px of another region (> 5 % of the face)
    shapes = region_shapes(labels, 5)
    assert shapes[1, 5] == 3  # two eyes and the mouth; not the hand, the speck or the open top
    assert shapes[2, 5] == 0 and shapes[3, 5] == 0
    desc = region_descriptors(shapes[1:2], (20.0, 20.0, 40.0, 0.0))
    assert np.isclose(desc[0, 6], np.log(4))
    # In the match, a page region's details must be in its counterpart (a face is not a
    # shirt); a page region without details may still be a reference region with some.
    face, shirt = desc[0], desc[0].copy()
    shirt[6] = 0.0
    cost = match_cost(np.stack([face, shirt]), np.stack([face, shirt]))
    assert cost[0, 0] == 0 and np.isclose(cost[0, 1], DESCRIPTOR_WEIGHTS[6] * np.log(4))
    assert cost[1, 0] == 0 and cost[1, 1] == 0
