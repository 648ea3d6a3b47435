"""Several characters on one page: instance masks (silhouettes, Segment Anything), one
identity per instance (joint assignment, tracks), per-instance colorization and the
multi-instance metrics. Pages are drawn here with known geometry and colors, so the
expected instances and fills are known exactly."""

from __future__ import annotations

import json

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


# --- identity per instance ------------------------------------------------------------

def test_joint_assignment_hand_computed():
    scores = [{"cat": 0.55, "monkey": 0.45},  # torn between cat and monkey
              {"cat": 0.90, "monkey": 0.05, "": 0.05},  # surely cat
              {"cat": 0.60, "": 0.40},  # only cat is allowed for it
              {"cat": 0.30, "monkey": 0.30, "": 0.40}]  # nothing reaches 0.4
    # Allowed pairs (share >= 0.4): A-cat .55, A-monkey .45, B-cat .90, C-cat .60.
    # One-to-one maximum: B-cat + A-monkey = 1.35 (A-cat + B-? = 0.55, C-cat + A-monkey = 1.05).
    # C is left out with cat taken, but its own score allows cat: both say so, C is cat too.
    assert assign_instance_identities(scores, 0.4) == ["monkey", "cat", "cat", "unknown"]
    # Per instance alone, A would have been cat: the joint decision is what differs.
    assert max(scores[0], key=scores[0].get) == "cat"
    # Configured identities: only they are candidates, and every instance takes one.
    assert assign_instance_identities(scores, 0.4, configured=["monkey"]) == ["monkey"] * 4
    assert assign_instance_identities([], 0.4) == []


def test_track_identity_is_the_majority_of_confident_votes():
    frames = [{"cat": 0.8, "monkey": 0.2}, {"cat": 0.9}, {"monkey": 0.75, "cat": 0.25}, {"cat": 0.3, "monkey": 0.3}]
    assert track_scores(frames, 0.7) == {"cat": 2 / 3, "monkey": 1 / 3}  # the last frame is not confident
    assert assign_instance_identities([track_scores(frames, 0.7)], 0.5) == ["cat"]


def test_instances_are_tracked_through_a_scene_by_flow_and_overlap():
    def frame(x_a: int, x_b: int, third: bool = False):
        lines = np.full((120, 240), 255, np.uint8)
        masks = []
        for x in (x_a, x_b) + ((200,) if third else ()):
            cv2.circle(lines, (x, 60), 25, 0, 2)
            m = np.zeros((120, 240), np.uint8)
            cv2.circle(m, (x, 60), 26, 1, -1)
            masks.append(m > 0)
        return lines, masks

    shots = [frame(50, 130), frame(58, 138), frame(66, 146, third=True)]
    # The instances arrive in another order in the last frame: the track follows the character.
    order = [[0, 1], [1, 0], [2, 0, 1]]
    observations = [[Observation(masks[i]) for i in o] for (_, masks), o in zip(shots, order)]
    ids = track_instances(observations, [lines for lines, _ in shots])
    assert ids[0] == [0, 1]
    assert ids[1] == [1, 0]  # swapped order, same tracks
    assert ids[2] == [2, 0, 1]  # the newcomer starts track 2


# --- the stages: instances -> retrieve -> colorize ------------------------------------

def make_two_character_job(tmp_path, pages: dict[str, np.ndarray], overrides: list[str] = ()):
    """A chapter job run through ingest .. colorize as plain stage functions; refs: two
    views each of alice and carl (colored, no frames)."""
    from chromaflow.models.colorizers import build_colorizer
    from chromaflow.stages import colorize, ingest, instances, lines, palette_memory, references, retrieve
    from chromaflow.storage.job import JobDir

    refs = tmp_path / "refs"
    for i, (dx, scale) in enumerate([(0, 1.0), (15, 0.85)]):
        write_png(refs / "alice" / f"alice_{i}.png", draw_character(PALETTES["alice"], dx=dx, scale=scale, frame=False))
        write_png(refs / "carl" / f"carl_{i}.png", draw_carl(CARL, dx=dx, scale=scale))
    chapter = tmp_path / "chapter"
    for name, page in pages.items():
        write_png(chapter / f"{name}.png", page)
    config = load_config(overrides=list(overrides))
    job = JobDir(tmp_path / "job", "ch")
    job.root.mkdir()
    job.write_info({"name": "ch", "kind": "chapter", "source": str(chapter), "refs": str(refs),
                    "config": config.model_dump(mode="json")})
    ingest.run(job, chapter, config)
    references.run(job, str(refs), config)
    palette_memory.run(job, config)
    for stage in (lines, instances, retrieve):
        assert stage.run(job, 0, config).status == "ok"
    assert colorize.run(job, 0, config, build_colorizer(config)).status == "ok"
    return job


def shard_samples(job, stage: str) -> list[dict]:
    from chromaflow.storage.shards import read_shard

    return read_shard(job.shard_path(stage, 0))


def near(rgb, expected, tolerance: float = 12.0) -> bool:
    from chromaflow.models.metrics import delta_e

    return float(delta_e(np.array([rgb], np.uint8), np.array([expected], np.uint8))[0]) < tolerance


@pytest.fixture(scope="module")
def two_character_job(tmp_path_factory):
    return make_two_character_job(tmp_path_factory.mktemp("two"), {"page1": two_characters(colored=False)})


def test_each_character_is_identified_and_colored_from_its_own_references(two_character_job):
    from chromaflow.storage.images import decode_png

    job = two_character_job
    retrieved = json.loads(shard_samples(job, "retrieve")[0]["json"])
    found = sorted(retrieved["instances"], key=lambda i: i["box"][0])
    assert [i["identity"] for i in found] == ["alice", "carl"]
    assert all(r["identity"] == i["identity"] for i in found for r in i["references"])  # own pool only
    sample = shard_samples(job, "colorize")[0]
    meta = json.loads(sample["json"])
    assert [i["identity"] for i in sorted(meta["instances"], key=lambda i: i["box"][0])] == ["alice", "carl"]
    out = decode_png(sample["png"])
    scale = out.shape[1] / 640
    at = lambda x, y: out[int(y * scale), int(x * scale)]  # noqa: E731  page coordinates of two_characters
    assert near(at(160, 120), PALETTES["alice"]["head"]) and near(at(160, 330), PALETTES["alice"]["body"])
    assert near(at(440, 110), CARL["head"]) and near(at(440, 330), CARL["body"])
    assert near(at(600, 30), (255, 255, 255))  # the paper stays paper
    # report.html's characters section: both outlined with their names, and each
    # identity's own colors among its swatches.
    from chromaflow.stages.report_instances import instances_html

    section = instances_html(job)
    assert "2 characters: carl, alice" in section  # in the segmenter's order
    hexes = lambda rgb: "#%02x%02x%02x" % tuple(rgb)  # noqa: E731
    alice_row = section[section.index("<tr><td>alice"):section.index("<tr><td>carl")]
    assert hexes(PALETTES["alice"]["head"]) in alice_row and hexes(PALETTES["alice"]["body"]) in alice_row
    assert hexes(CARL["head"]) in section[section.index("<tr><td>carl"):]


def test_a_page_without_characters_has_no_instances_and_is_colored_from_the_whole_pool(tmp_path):
    text = np.full((448, 640, 3), 255, np.uint8)
    for row in range(6):
        cv2.putText(text, "the quick brown fox jumps", (20, 60 + 60 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2)
    with_instances = make_two_character_job(tmp_path / "a", {"text": text})
    without = make_two_character_job(tmp_path / "b", {"text": text}, ["instances.backend=none"])
    meta = json.loads(shard_samples(with_instances, "instances")[0]["json"])
    assert meta["instances"] == []
    retrieved = json.loads(shard_samples(with_instances, "retrieve")[0]["json"])
    assert retrieved["instances"] == [] and retrieved["panels"][0]["references"]  # the page's own search
    # Exactly what the pipeline does without instances.
    assert shard_samples(with_instances, "colorize")[0]["png"] == shard_samples(without, "colorize")[0]["png"]


# --- multi-instance metrics ---------------------------------------------------------

def test_instance_recall_and_identity_accuracy_hand_computed():
    from chromaflow.models.instance_metrics import instance_identity_accuracy, instance_precision, instance_recall

    truth = [((0, 0, 10, 10), "cat"), ((20, 0, 30, 10), "monkey")]
    boxes = [b for b, _ in truth]
    assert instance_recall([(0, 0, 10, 8), (15, 0, 30, 10)], boxes) == 1.0  # IoU 0.8 and 0.667
    assert instance_recall([(0, 0, 10, 8), (27, 0, 30, 10)], boxes) == 0.5  # IoU 0.3 misses
    assert instance_recall([(0, 0, 30, 10)], boxes) == 0.0  # one box over both: IoU 1/3 each
    assert instance_precision([(0, 0, 10, 8), (27, 0, 30, 10), (50, 50, 60, 60)], boxes) == 1 / 3
    pred = [((0, 0, 10, 8), "cat"), ((21, 0, 30, 10), "dog"), ((50, 50, 60, 60), "cat")]
    assert instance_identity_accuracy(pred, truth) == 1 / 3  # right, wrong identity, no ground truth there


def test_consistency_spread_is_ciede2000_to_the_parts_median_color():
    from skimage.color import deltaE_ciede2000, rgb2lab

    from chromaflow.models.instance_metrics import consistency_spreads, consistency_summary, part_colors

    truth = np.full((40, 40, 3), 255, np.uint8)
    truth[5:35, 5:35] = (200, 100, 50)  # the character's one part
    lines = np.full((40, 40, 3), 255, np.uint8)
    pages = [truth.copy(), truth.copy(), truth.copy()]
    pages[1][5:35, 5:35] = (190, 110, 60)
    pages[2][5:35, 5:35] = (120, 120, 200)  # the part went blue on one page
    observed = {"cat": [part_colors(p, truth, lines, (0, 0, 40, 40)) for p in pages]}
    assert list(observed["cat"][0]) == [(200, 100, 50)]
    labs = rgb2lab(np.array([[[200, 100, 50], [190, 110, 60], [120, 120, 200]]], np.uint8))[0]
    expected = deltaE_ciede2000(labs, np.broadcast_to(np.median(labs, axis=0), labs.shape))
    spreads = consistency_spreads(observed)["cat"]
    assert np.allclose(sorted(spreads), sorted(expected), atol=1e-6)
    summary = consistency_summary({"cat": spreads})
    assert summary["consistency_de_median"] == pytest.approx(float(np.median(expected)))


def test_episode_instances_keep_their_identity_through_the_scene(two_character_job):
    """Three frames of a shot with both characters moving: each keeps one track and the
    track's identity on every frame."""
    from chromaflow.retrieval.instance_search import search_scene_instances
    from chromaflow.stages.instances import instance_sample, read_instances
    from chromaflow.stages.retrieve import open_index

    store = open_index(two_character_job, load_config())
    frames = []
    for shift in (0, 6, 12):
        page = np.roll(two_characters(colored=False), shift, axis=1)
        lines = extract_lines(page).lines
        labels, records = read_instances(instance_sample(lines.shape, SilhouetteSegmenter().segment(lines),
                                                         "silhouette"))
        frames.append((lines, page, labels, records))
    results = search_scene_instances(store, frames, 3, 0.5, None, max_cost=0.8, appearance_weight=0.5)
    per_frame = [sorted((i["box"][0], i["track"], i["identity"]) for i in frame) for frame in results]
    assert [[ident for _, _, ident in frame] for frame in per_frame] == [["alice", "carl"]] * 3
    assert len({tuple(t for _, t, _ in frame) for frame in per_frame}) == 1  # the same two tracks throughout


def test_score_pages_puts_the_metrics_together():
    from chromaflow.models.instance_metrics import score_pages

    truth = np.full((40, 80, 3), 255, np.uint8)
    truth[5:35, 5:35] = (200, 100, 50)
    truth[5:35, 45:75] = (40, 90, 200)
    lines = np.full((40, 80, 3), 255, np.uint8)
    out = truth.copy()
    out[5:35, 45:75] = (255, 255, 255)  # the second character was left uncolored
    page = {"name": "p1", "line": lines, "color": truth, "output": out,
            "truth": [{"identity": "cat", "bbox": [5, 5, 35, 35]}, {"identity": "dog", "bbox": [45, 5, 75, 35]}],
            "instances": [([5, 5, 35, 35], "cat"), ([44, 5, 75, 35], "cat")]}
    scores = score_pages([page])
    assert scores["instance_recall"] == 1.0 and scores["instance_identity_accuracy"] == 0.5
    assert scores["flat_color_accuracy"] == pytest.approx(0.5)  # half the foreground is right
    assert scores["pages"][0]["identity_correct"] == 1


def test_quadrant_backends_get_each_quadrants_patches_from_the_identities_in_it(tmp_path):
    """Diffusion-style backends: no per-instance requests; each quadrant's patches come
    from the pools of the characters inside that quadrant."""
    from chromaflow.retrieval.images import ReferenceImages
    from chromaflow.stages.colorize import page_requests

    wide = np.full((448, 1200, 3), 255, np.uint8)
    wide[:, :320] = draw_character(PALETTES["alice"], colored=False, frame=False)
    wide[:, 880:] = draw_carl(CARL, colored=False)
    job = make_two_character_job(tmp_path, {"wide": wide})
    retrieved = json.loads(shard_samples(job, "retrieve")[0]["json"])
    assert sorted(i["identity"] for i in retrieved["instances"]) == ["alice", "carl"]
    panel = retrieved["panels"][0]
    # Quadrants TL, TR, BL, BR are 3/4-size crops: the left ones hold alice only, the right ones carl only.
    assert panel["quadrant_identities"] == [["alice"], ["carl"], ["alice"], ["carl"]]
    for names, hits in zip(panel["quadrant_identities"], panel["instance_quadrants"]):
        assert hits and all(h["identity"] in names for h in hits)

    class QuadrantBackend:
        name, uses_quadrant_patches = "quadrants", True

    inputs = {stage: shard_samples(job, stage)[0] for stage in ("ingest", "lines", "retrieve", "instances")}
    work = page_requests("p000000", inputs, load_config(), QuadrantBackend(), ReferenceImages.open(job.references),
                         None)
    assert work.instances == [] and len(work.panels) == 1
    request = work.panels[0][2]
    assert [len(p) for p in request.quadrant_patches] == [len(h) for h in panel["instance_quadrants"]]


def test_tone_page_requests_get_crops_of_the_gray_the_lines_stage_descreened(tmp_path):
    """A screentoned page is descreened once, by the lines stage (kept in its shard); every
    panel and character request gets its crop of that gray, erased where its page is."""
    from chromaflow.models.colorizers.region import RegionColorizer
    from chromaflow.models.synth_screens import Screen, tone_page
    from chromaflow.retrieval.images import ReferenceImages
    from chromaflow.stages.colorize import page_requests
    from chromaflow.stages.lines import read_tone

    page, _ = tone_page(two_characters(colored=True), np.random.default_rng(1), [Screen("dots", 5.0, 45.0)])
    requests = {}
    for backend in ("silhouette", "none"):  # per character, and one request for the whole panel
        job = make_two_character_job(tmp_path / backend, {"toned": page}, [f"instances.backend={backend}"])
        inputs = {stage: shard_samples(job, stage)[0] for stage in ("ingest", "lines", "retrieve", "instances")}
        assert json.loads(inputs["lines"]["json"])["kind"] == "tone"
        tone = read_tone(inputs["lines"])
        assert tone is not None and tone.screens and tone.gray.shape == (448, 640) and 0.1 < tone.texture_share <= 1
        assert tone.gray[330, 160] < 235  # alice's body: the screen's mean gray, flat
        assert np.ptp(tone.gray[310:350, 130:190]) < 25
        requests[backend] = page_requests("p000000", inputs, load_config(), RegionColorizer(),
                                          ReferenceImages.open(job.references), None)
    characters, panel = requests["silhouette"], requests["none"]
    assert len(characters.instances) == 2 and len(panel.panels) == 1 and not panel.instances
    for _, ((x0, y0, x1, y1), inside, _), request in characters.instances:
        assert np.array_equal(request.tone.gray[inside], tone.gray[y0:y1, x0:x1][inside])
        assert (request.tone.gray[~inside] == 255).all()
    (x0, y0, x1, y1), request = panel.panels[0][1:]
    assert np.array_equal(request.tone.gray, tone.gray[y0:y1, x0:x1])
    line_job = make_two_character_job(tmp_path / "line", {"line": two_characters(colored=False)})
    assert read_tone(shard_samples(line_job, "lines")[0]) is None  # a line page keeps no gray


def test_what_no_request_colors_keeps_the_drawing_on_whitened_neutral_paper():
    # A scan's yellowed paper with a gray wash and black ink, as gutters and skipped panels
    # show it: on black-and-white pages it comes out on white paper, gray and ink kept;
    # a color page stays as it is.
    from chromaflow.stages.colorize import as_drawn

    page = np.full((60, 80, 3), (250, 238, 196), np.uint8)  # yellowed paper
    page[10:20, 10:70] = (125, 119, 98)  # a gray wash on the same paper (half its brightness)
    page[30:34, 5:75] = (12, 10, 8)  # ink
    for kind in ("line", "gray", "tone", "lineart"):
        out = as_drawn(page, kind).astype(int)
        assert (np.ptp(out, axis=2) == 0).all()  # neutral everywhere
        assert out[40:, :].min() >= 254  # paper white
        assert abs(out[15, 40, 0] - 127) <= 3  # the wash at half the paper's brightness
        assert out[32, 40, 0] <= 12  # ink stays black
    assert np.array_equal(as_drawn(page, "color"), page)
