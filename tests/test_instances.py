"""Several characters on one page: instance masks (silhouettes, Segment Anything), one
identity per instance (joint assignment, tracks), per-instance colorization and the
multi-instance metrics. Pages are drawn here with known geometry and colors, so the
expected instances and fills are known exactly."""

from __future__ import annotations

import json
from functools import partial

import cv2
import numpy as np
import pytest

from chromaflow.conf import load_config
from chromaflow.models.instances.assignment import assign_instance_identities, track_scores
from chromaflow.models.instances.base import Instance, label_map
from chromaflow.models.instances.necks import split_at_necks
from chromaflow.models.instances.silhouette import SilhouetteSegmenter
from chromaflow.models.instances.snap import snap_to_regions
from chromaflow.models.instances.tracking import Observation, track_instances
from chromaflow.models.lines import extract_lines
from synthetic import PALETTES, draw_character, write_png

CARL = {"head": (120, 200, 120), "eyes": (250, 250, 60), "body": (240, 150, 30)}


def draw_carl(palette: dict, size=(320, 448), dx: int = 0, scale: float = 1.0, colored: bool = True) -> np.ndarray:
    """A second character, drawn unlike alice: square head, triangular body, square eyes."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    cx, cy, r = w // 2 + dx, int(h * 0.33), int(min(w, h) * 0.2 * scale)
    head = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]], np.int32)
    body = np.array([[cx, cy + r + 6], [cx + int(1.4 * r), cy + int(3.4 * r)], [cx - int(1.4 * r), cy + int(3.4 * r)]],
                    np.int32)
    eyes = [(cx - r // 2, cy - r // 4), (cx + r // 2, cy - r // 4)]
    e = max(3, r // 6)
    if colored:
        cv2.fillPoly(img, [body], palette["body"])
        cv2.fillPoly(img, [head], palette["head"])
        for x, y in eyes:
            cv2.rectangle(img, (x - e, y - e), (x + e, y + e), palette["eyes"], -1)
    t = max(2, r // 18)
    cv2.polylines(img, [body, head], True, (0, 0, 0), t)
    for x, y in eyes:
        cv2.rectangle(img, (x - e, y - e), (x + e, y + e), (0, 0, 0), t)
    return img


def two_characters(colored: bool, gap: int = 40) -> np.ndarray:
    """alice on the left, carl on the right of one 640 x 448 page (no frame)."""
    left = draw_character(PALETTES["alice"], colored=colored, frame=False)
    right = draw_carl(CARL, colored=colored)
    page = np.full((448, 640, 3), 255, np.uint8)
    page[:, :320] = left
    shift = 320 - gap
    page[:, shift:shift + 320] = np.minimum(page[:, shift:shift + 320], right)
    return page


def box_iou(a, b) -> float:
    from chromaflow.models.instance_metrics import box_iou as iou

    return iou(a, b)


def character_boxes(instances: list[Instance]) -> list[tuple]:
    """Boxes of the union of each group's instances (pieces of one silhouette), left to right."""
    groups: dict[int, np.ndarray] = {}
    for i in instances:
        groups[i.group] = groups.get(i.group, np.zeros_like(i.mask)) | i.mask
    return sorted((Instance(m).box for m in groups.values()), key=lambda b: b[0])


# --- silhouettes ----------------------------------------------------------------------

def test_two_characters_on_line_art_are_two_instances_at_their_places():
    lines = extract_lines(two_characters(colored=False)).lines
    boxes = character_boxes(SilhouetteSegmenter().segment(lines))
    assert len(boxes) == 2
    # alice: head circle r=70 at (160, 156), body to y=380; carl: head square at 440 +- 64
    assert box_iou(boxes[0], (88, 84, 240, 382)) > 0.8
    assert box_iou(boxes[1], (350, 82, 530, 395)) > 0.8


def test_touching_characters_are_split_between_them():
    page = two_characters(colored=False, gap=153)  # carl's body corner touches alice's body
    lines = extract_lines(page).lines
    _, strokes = cv2.connectedComponents((lines < 128).astype(np.uint8))
    assert strokes[300, 236] == strokes[366, 327] != 0  # one stroke runs from alice's body into carl's
    instances = SilhouetteSegmenter().segment(lines)
    # Pieces of one silhouette (retrieval joins those that are one character), the two
    # heads never in one piece, and together they cover both characters.
    assert len({i.group for i in instances}) == 1
    alice_head = [i for i in instances if i.mask[156, 160]]
    carl_head = [i for i in instances if i.mask[150, 327]]
    assert len(alice_head) == 1 and len(carl_head) == 1 and alice_head[0] is not carl_head[0]
    assert box_iou(character_boxes(instances)[0], (81, 82, 418, 384)) > 0.8


def gray_page(screentone: bool) -> np.ndarray:
    """The colored page as a gray manga page; with screentone, the bodies and a background
    band carry a dot pattern."""
    gray = cv2.cvtColor(cv2.cvtColor(two_characters(colored=True), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if screentone:
        yy, xx = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
        dots = ((yy % 6 < 2) & (xx % 6 < 2))
        band = np.zeros(gray.shape[:2], bool)
        band[400:440, :] = True
        tone = dots & (band | (gray[..., 0] < 140) & (gray[..., 0] > 60))
        gray[tone] = 30
    return gray


@pytest.mark.parametrize("screentone", [False, True])
def test_silhouettes_on_gray_and_screentoned_pages(screentone):
    lines = extract_lines(gray_page(screentone)).lines
    boxes = character_boxes(SilhouetteSegmenter().segment(lines))
    assert len(boxes) == 2, boxes
    assert box_iou(boxes[0], (88, 84, 240, 382)) > 0.7
    assert box_iou(boxes[1], (350, 82, 530, 395)) > 0.7


def test_text_balloon_landscape_and_empty_pages_have_no_instances():
    text = np.full((448, 640, 3), 255, np.uint8)
    for row in range(6):
        cv2.putText(text, "the quick brown fox jumps", (20, 60 + 60 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2)
    balloon = np.full((448, 640, 3), 255, np.uint8)
    cv2.ellipse(balloon, (320, 220), (220, 130), 0, 0, 360, (0, 0, 0), 3)
    for row, words in enumerate(["WHERE ARE", "YOU GOING", "SO LATE?"]):
        cv2.putText(balloon, words, (190, 180 + 45 * row), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 2)
    landscape = np.full((448, 640, 3), 255, np.uint8)
    cv2.polylines(landscape, [np.array([[0, 300], [150, 150], [260, 260], [400, 100], [640, 280]], np.int32)],
                  False, (0, 0, 0), 3)
    cv2.line(landscape, (0, 360), (639, 360), (0, 0, 0), 3)
    blank = np.full((448, 640, 3), 255, np.uint8)
    segmenter = SilhouetteSegmenter()
    for page in (text, balloon, landscape, blank):
        assert segmenter.segment(extract_lines(page).lines) == []


def test_a_character_next_to_a_balloon_is_the_only_instance():
    page = np.full((448, 640, 3), 255, np.uint8)
    page[:, :320] = draw_character(PALETTES["alice"], colored=False, frame=False)
    cv2.ellipse(page, (480, 120), (130, 80), 0, 0, 360, (0, 0, 0), 3)
    for row, words in enumerate(["HELLO", "THERE!"]):
        cv2.putText(page, words, (420, 110 + 40 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2)
    boxes = character_boxes(SilhouetteSegmenter().segment(extract_lines(page).lines))
    assert len(boxes) == 1 and box_iou(boxes[0], (88, 84, 240, 382)) > 0.8


def test_neck_split_two_discs_but_not_one_blob_with_a_bump():
    two = np.zeros((200, 400), np.uint8)
    cv2.circle(two, (110, 100), 80, 1, -1)
    cv2.circle(two, (280, 100), 80, 1, -1)  # overlapping by 10 px: a narrow neck
    pieces = split_at_necks(two > 0, depth=0.3)
    assert len(pieces) == 2 and pieces[0][100, 110] != pieces[1][100, 110]
    one = np.zeros((200, 400), np.uint8)
    cv2.circle(one, (200, 100), 90, 1, -1)
    cv2.circle(one, (290, 100), 20, 1, -1)  # an ear
    assert len(split_at_necks(one > 0, depth=0.3)) == 1


def test_snap_gives_a_region_cut_by_the_coarse_mask_to_its_majority():
    lines = np.full((100, 200), 255, np.uint8)
    cv2.rectangle(lines, (10, 10), (90, 90), 0, 2)
    cv2.rectangle(lines, (110, 10), (190, 90), 0, 2)
    coarse = np.zeros((100, 200), np.uint8)
    coarse[:, :120] = 1  # a split line 20 px into the right box
    coarse[:, 120:] = 2
    snapped = snap_to_regions(coarse, lines)
    assert (snapped[20:80, 20:80] == 1).all() and (snapped[20:80, 115:185] == 2).all()
    assert snapped[50, 10] == 1 and snapped[50, 110] == 2  # the outlines go with their boxes


def test_label_map_overlap_goes_to_the_more_confident_instance():
    a, b = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    a[:, :6], b[:, 4:] = True, True
    labels = label_map([Instance(a, 0.9), Instance(b, 0.5)], (10, 10))
    assert (labels[:, 4:6] == 1).all() and (labels[:, 6:] == 2).all()
