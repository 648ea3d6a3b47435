"""The region colorizer on the pages users really have: new poses and warps, references
framed differently, open outlines, screentones, unsure regions, color pages, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np

from chromaflow.models.colorizers.base import ColorizeRequest, Reference
from chromaflow.models.colorizers.region import RegionColorizer
from chromaflow.models.lines import extract_lines
from chromaflow.models.metrics import pair_metrics
from chromaflow.models.open_fills import open_fills
from chromaflow.models.registration import register
from chromaflow.models.synth_screens import Screen, tone_page
from chromaflow.models.synth_warps import apply_warp, random_warp
from synthetic import PALETTES, draw_character


def reference(color: np.ndarray, name: str = "alice/r.png", score: float = 1.0) -> Reference:
    return Reference("alice", name, color, extract_lines(color).lines, score)


def colorize(page: np.ndarray, refs: list[Reference], memory=None, key: str = "p0"):
    art = extract_lines(page)
    request = ColorizeRequest(key, page, art.lines, art.kind, refs, ["alice"], remembered_colors=memory)
    return RegionColorizer().colorize(request), request


def scores(out, truth, page) -> dict:
    return pair_metrics(out, truth, cv2.cvtColor(page, cv2.COLOR_RGB2GRAY))


def test_misaligned_reference_paints_nothing_on_the_paper():
    """The reference holds the character elsewhere and a big colored blob where the page
    has paper: none of it lands outside the page's drawing."""
    page = draw_character(PALETTES["alice"], colored=False, frame=False, dx=-40)
    truth = draw_character(PALETTES["alice"], frame=False, dx=-40)
    ref = draw_character(PALETTES["alice"], frame=False, dx=30, dy=20)
    cv2.circle(ref, (60, 380), 50, PALETTES["alice"]["body"], -1)
    out, _ = colorize(page, [reference(ref)])
    m = scores(out, truth, page)
    assert m["background_accuracy"] > 0.99 and m["flat_color_accuracy"] > 0.9, m


def test_close_up_reference_for_a_full_page():
    """A head close-up (zoomed 2x) as the only reference: the head is colored, the
    blown-up face is not painted over the paper."""
    page = draw_character(PALETTES["bob"], colored=False, frame=False)
    truth = draw_character(PALETTES["bob"], frame=False)
    full = draw_character(PALETTES["bob"], frame=False)
    close_up = cv2.resize(full[40:260, 50:270], (320, 320), interpolation=cv2.INTER_LINEAR)
    out, _ = colorize(page, [Reference("bob", "bob/head.png", close_up, extract_lines(close_up).lines, 1.0)])
    m = scores(out, truth, page)
    assert m["background_accuracy"] > 0.99, m
    head = out[int(448 * 0.35) - 20, 160]
    assert np.abs(head.astype(int) - PALETTES["bob"]["head"]).max() <= 3


def test_small_close_up_reference_is_registered_where_it_lies():
    """A reference showing a fifth of the page's drawing, zoomed in: registered where it
    lies on the page, not blown up over the whole drawing (hand-computed: the window's
    center maps to the reference's center)."""
    page = draw_character(PALETTES["bob"], colored=False, frame=False)
    x0, y0, x1, y1 = 100, 60, 220, 180  # the top of the head, 120 px, zoomed to 320 px
    close_up = cv2.resize(draw_character(PALETTES["bob"], frame=False)[y0:y1, x0:x1], (320, 320),
                          interpolation=cv2.INTER_LINEAR)
    registration = register(extract_lines(page).lines < 128, extract_lines(close_up).lines < 128)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    assert abs(registration.map_x[cy, cx] - 160) < 12 and abs(registration.map_y[cy, cx] - 160) < 12


def test_close_up_page_cut_by_its_edge_is_colored():
    """A head close-up page (zoomed 2.7x, the head cut by the page's edge on all sides)
    with a full-body reference: the head's fill reaches the page's edge."""
    x0, y0, x1, y1 = 100, 90, 220, 210
    zoom = lambda img, mode: cv2.resize(img[y0:y1, x0:x1], (320, 320), interpolation=mode)  # noqa: E731
    page = zoom(draw_character(PALETTES["bob"], colored=False, frame=False), cv2.INTER_LINEAR)
    truth = zoom(draw_character(PALETTES["bob"], frame=False), cv2.INTER_NEAREST)
    full = draw_character(PALETTES["bob"], frame=False, dx=10)
    out, _ = colorize(page, [Reference("bob", "bob/full.png", full, extract_lines(full).lines, 1.0)])
    m = scores(out, truth, page)
    assert m["flat_color_accuracy"] > 0.95 and m["background_accuracy"] > 0.99, m


def test_a_fill_beside_a_held_fill_is_held_and_a_ghost_is_not():
    """Hand-built open_fills case (100 x 100, one border-touching region): strokes above,
    below and left of fills A (x 13-49) and B (x 50-79), none right of B. A is held by
    strokes along 2/3 of its outline; B only along 60 of its ~214 outline pixels, but with
    its border to A (77 px) along 64 %: kept. A ghost G (x 85-97) with only paper around
    it is dropped. (The opening rounds the fills' corners: interiors are checked.)"""
    ink = np.zeros((100, 100), bool)
    ink[10:13, 10:80] = ink[90:93, 10:80] = ink[10:93, 10:13] = True
    votes = np.zeros((4, 100, 100), np.float32)
    votes[0] = 1.0  # paper everywhere ...
    votes[:, 13:90, 13:50] = np.array([0, 1, 0, 0], np.float32)[:, None, None]  # ... but A
    votes[:, 13:90, 50:80] = np.array([0, 0, 1, 0], np.float32)[:, None, None]  # B
    votes[:, 30:70, 85:98] = np.array([0, 0, 0, 1], np.float32)[:, None, None]  # ghost G
    out = open_fills(~ink, votes, 0, ink, smoothing=0.0, sliver_width=0.02)
    assert (out[16:87, 16:47] == 1).all() and (out[16:87, 53:77] == 2).all()
    assert (out[30:70, 85:98] == 0).all()


def test_an_open_fill_needs_most_of_the_votes():
    """Hand-built open_fills case (100 x 100): a fill held by strokes on three sides. Where
    the references agree on its color (0.6 of the votes, the rest paper and another color)
    it is kept (the votes there summing to 0.8: weakly fitting references); where they
    split 0.4 / 0.35 / 0.25 (misregistered references of other
    poses, each painting its own part there) nobody's fill is painted: paper."""
    ink = np.zeros((100, 100), bool)
    ink[10:13, 10:90] = ink[10:90, 10:13] = ink[10:90, 87:90] = True
    def votes_for(shares):
        votes = np.zeros((3, 100, 100), np.float32)
        votes[0] = 1.0
        votes[:, 13:90, 13:87] = np.array(shares, np.float32)[:, None, None]
        return votes
    kept = open_fills(~ink, votes_for([0.16, 0.48, 0.16]), 0, ink, smoothing=0.0, sliver_width=0.02)
    assert (kept[16:87, 16:84] == 1).all()
    split = open_fills(~ink, votes_for([0.25, 0.4, 0.35]), 0, ink, smoothing=0.0, sliver_width=0.02)
    assert (split == 0).all()


def test_the_page_edge_does_not_count_against_a_fill_the_references_show_whole():
    """Hand-built open_fills case: a fill F (x 0-39, y 10-89) cut by the image's left edge,
    with page ink along its right side and half its top: held along 100 of its ~240 outline
    pixels (42 %), but along 100 of the ~160 off the edge (62 %). Kept when the votes there
    come from reference regions shown whole (a face cut by a close-up page's edge); dropped
    when they come from regions a reference cuts itself (a ghost blown up from a close-up)."""
    ink = np.zeros((100, 100), bool)
    ink[7:10, 0:20] = True  # half of the top
    ink[10:90, 40:43] = True  # the right side
    votes = np.zeros((2, 100, 100), np.float32)
    votes[0] = 1.0
    votes[:, 10:90, 0:40] = np.array([0, 1], np.float32)[:, None, None]
    shown_whole = votes.sum(axis=0) * 0
    shown_whole[10:90, 0:40] = 1.0
    kept = open_fills(~ink, votes, 0, ink, 0.0, 0.02, shown_whole, None)
    assert (kept[13:87, 3:37] == 1).all()
    ghost = open_fills(~ink, votes, 0, ink, 0.0, 0.02, np.zeros_like(shown_whole), None)
    assert (ghost == 0).all()


def test_warped_page_keeps_its_colors():
    page = draw_character(PALETTES["alice"], colored=False, frame=False)
    truth = draw_character(PALETTES["alice"], frame=False)
    warp = random_warp(page.shape[:2], np.random.default_rng(7))
    page, truth = apply_warp(page, warp), apply_warp(truth, warp, nearest=True)
    out, _ = colorize(page, [reference(draw_character(PALETTES["alice"], frame=False))])
    m = scores(out, truth, page)
    assert m["flat_color_accuracy"] > 0.9 and m["background_accuracy"] > 0.99, m


def _u_shape(colored: bool, dx: int = 0) -> np.ndarray:
    """A 'bust': an outline open at the bottom whose fill ends where its strokes end."""
    img = np.full((300, 300, 3), 255, np.uint8)
    pts = np.array([[70 + dx, 250], [70 + dx, 120], [150 + dx, 60], [230 + dx, 120], [230 + dx, 250]], np.int32)
    if colored:
        cv2.fillPoly(img, [pts], (60, 120, 220))
    cv2.polylines(img, [pts], False, (0, 0, 0), 6)
    return img


def test_fill_of_an_open_outline_is_kept_and_ends_with_its_strokes():
    page, truth = _u_shape(False, dx=12), _u_shape(True, dx=12)
    out, _ = colorize(page, [reference(_u_shape(True))])
    assert np.abs(out[180, 150].astype(int) - (60, 120, 220)).max() <= 3
    assert out[280, 150].min() >= 250 and out[150, 30].min() >= 250  # below and beside: paper
    assert scores(out, truth, page)["background_accuracy"] > 0.99


def _open_bust(colored: bool) -> np.ndarray:
    """A head over a shirt drawn as two sides with short shoulders, open at the bottom and
    over most of its top: the shirt ends where its sides end."""
    img = np.full((360, 360, 3), 255, np.uint8)
    if colored:
        cv2.rectangle(img, (100, 230), (260, 320), (60, 120, 220), -1)
        cv2.circle(img, (180, 150), 60, (230, 180, 140), -1)
    for x0, x1 in ((100, 125), (260, 235)):
        cv2.polylines(img, [np.array([[x0, 320], [x0, 230], [x1, 230]], np.int32)], False, (0, 0, 0), 6)
    cv2.circle(img, (180, 150), 60, (0, 0, 0), 6)
    return img


def test_a_fill_ending_between_the_last_ends_of_its_strokes_is_held():
    """The shirt's strokes hold less than half its outline; the line between its sides'
    bottom ends and between its shoulders' ends is where the drawing stops: held there."""
    page, truth = _open_bust(False), _open_bust(True)
    out, _ = colorize(page, [reference(truth)])
    m = scores(out, truth, page)
    assert np.abs(out[250, 140].astype(int) - (60, 120, 220)).max() <= 3
    assert out[345, 180].min() >= 250 and out[280, 40].min() >= 250  # below and beside: paper
    assert m["flat_color_accuracy"] > 0.8 and m["background_accuracy"] > 0.99, m


def _bust_with_an_arm(colored: bool, arm: list[list[int]]) -> np.ndarray:
    """A head, a shirt open at the bottom, and an arm drawn as two lines open at one end."""
    img = np.full((360, 360, 3), 255, np.uint8)
    shirt = np.array([[110, 330], [110, 230], [250, 230], [250, 330]], np.int32)
    arm = np.array(arm, np.int32)
    if colored:
        cv2.fillPoly(img, [shirt], (60, 120, 220))
        cv2.fillPoly(img, [arm], (230, 180, 140))
        cv2.circle(img, (180, 150), 60, (230, 180, 140), -1)
    cv2.polylines(img, [shirt, arm], False, (0, 0, 0), 6)
    cv2.circle(img, (180, 150), 60, (0, 0, 0), 6)
    return img


def test_an_arm_raised_on_the_page_and_lowered_in_the_reference_is_colored():
    """The raised arm's two lines stop side by side in the air: capped, it is a region of
    its own, and with the reference's arm elsewhere it takes its vote (skin) instead of
    the paper the overlay has there. (The reference's lowered arm, held by the shirt's side
    and the arm's bottom stroke, still paints beside the shirt: background ~0.97.)"""
    raised = [[290, 80], [290, 230], [255, 230], [255, 80]]
    page, truth = _bust_with_an_arm(False, raised), _bust_with_an_arm(True, raised)
    out, _ = colorize(page, [reference(_bust_with_an_arm(True, [[290, 340], [290, 235], [255, 235], [255, 340]]))])
    assert np.abs(out[120:200, 265:282].reshape(-1, 3).astype(int) - (230, 180, 140)).max() <= 3
    assert out[20, 272].min() >= 250  # above the arm's open end: paper
    assert scores(out, truth, page)["flat_color_accuracy"] > 0.9


def test_speed_lines_beside_the_character_stay_paper():
    """Parallel strokes that stop side by side but are separate strokes (speed lines) are
    not capped: the paper between them is background, not a region to color."""
    page = draw_character(PALETTES["alice"], colored=False, frame=False)
    truth = draw_character(PALETTES["alice"], frame=False)
    for img in (page, truth):
        for y in range(40, 400, 30):
            cv2.line(img, (10, y), (60, y + 4), (0, 0, 0), 3)
            cv2.line(img, (262, y), (312, y - 4), (0, 0, 0), 3)
    out, _ = colorize(page, [reference(draw_character(PALETTES["alice"], frame=False, dx=6))])
    m = scores(out, truth, page)
    assert m["background_accuracy"] > 0.99 and m["flat_color_accuracy"] > 0.95, m


def test_paper_inside_a_panel_frame_stays_paper():
    page = draw_character(PALETTES["alice"], colored=False, dx=5)  # framed panel, unframed reference
    truth = draw_character(PALETTES["alice"], dx=5)
    out, request = colorize(page, [reference(draw_character(PALETTES["alice"], frame=False, dx=-10))])
    assert request.diagnostics["panel_frame"] is True
    assert out[30, 30].min() >= 250 and out[420, 290].min() >= 250  # inside the frame, away from the character
    assert np.abs(out[int(448 * 0.35) - 20, 165].astype(int) - PALETTES["alice"]["head"]).max() <= 3
    assert scores(out, truth, page)["flat_color_accuracy"] > 0.9


def test_unsure_regions_take_a_remembered_color_and_are_reported():
    page = draw_character(PALETTES["alice"], colored=False, frame=False)
    refs = []
    for i, head in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        palette = dict(PALETTES["alice"], head=head)
        refs.append(reference(draw_character(palette, frame=False), f"alice/{i}.png"))
    memory = np.array([(40, 40, 200), PALETTES["alice"]["body"], PALETTES["alice"]["eyes"]], np.uint8)
    out, request = colorize(page, refs, memory)
    assert tuple(out[int(448 * 0.35) - 20, 160]) == (40, 40, 200)
    low = request.diagnostics["low_confidence"]
    assert any(b["box"][0] < 160 < b["box"][2] and b["box"][1] < 137 < b["box"][3] for b in low), low
    json.dumps(request.diagnostics)  # JSON-serialisable for the shard and report


def test_color_page_passes_through():
    page = draw_character(PALETTES["bob"])
    out, request = colorize(page, [reference(draw_character(PALETTES["alice"], frame=False))])
    assert np.array_equal(out, page) and request.diagnostics["color_page_kept"] is True


def test_screentoned_page_gets_flat_colors_under_its_shading():
    truth = draw_character(PALETTES["alice"], frame=False)
    page, _ = tone_page(truth, np.random.default_rng(0), [Screen("dots", 5.0, 45.0), Screen("lines", 6.0, 15.0)])
    out, request = colorize(page, [reference(draw_character(PALETTES["alice"], frame=False, dx=10))])
    assert request.diagnostics["style"] == "tone" and request.diagnostics["screens"]
    m = scores(out, truth, cv2.cvtColor(extract_lines(truth).lines, cv2.COLOR_GRAY2RGB))
    assert m["flat_color_accuracy"] > 0.8 and m["background_accuracy"] > 0.99, m
    body = cv2.cvtColor(out[300:370, 110:210], cv2.COLOR_RGB2LAB)[..., 0]  # inside the body, off its outline
    assert body.std() < 6  # no dots left in the body's lightness


def test_tone_page_uses_the_descreened_gray_it_is_given():
    truth = draw_character(PALETTES["alice"], frame=False)
    page, _ = tone_page(truth, np.random.default_rng(0), [Screen("dots", 5.0, 45.0)])
    art = extract_lines(page)
    assert art.kind == "tone" and art.tone is not None and art.tone.gray.shape == art.lines.shape
    refs = [reference(draw_character(PALETTES["alice"], frame=False, dx=10))]
    # Line extraction's gray with its strokes painted light gray, and made-up screens: the
    # colorizer must take both from the request, not descreen the page again (ink keeps
    # the page's lightness on a tone page).
    ink = art.lines < 128
    given = replace(art.tone, gray=np.where(ink, 200, art.tone.gray).astype(np.uint8), screens=[{"period": 99.0}],
                    texture_share=0.9)
    outputs = {}
    for name, tone in (("own", None), ("given", given), ("same", art.tone)):
        request = ColorizeRequest("p0", page, art.lines, art.kind, refs, ["alice"], tone=tone)
        outputs[name] = RegionColorizer().colorize(request)
        if name == "given":
            assert request.diagnostics["screens"] == [{"period": 99.0}]
            assert any("almost entirely screentone" in w for w in request.diagnostics["warnings"])
    assert np.array_equal(outputs["same"], outputs["own"])  # what line extraction kept is what it would redo
    ink_l = {k: cv2.cvtColor(v, cv2.COLOR_RGB2LAB)[..., 0][ink].mean() for k, v in outputs.items()}
    assert ink_l["own"] < 90 and ink_l["given"] > 180, ink_l


def test_bad_pages_and_references_warn_and_complete():
    good = reference(draw_character(PALETTES["alice"], frame=False))
    black = np.zeros((200, 160, 3), np.uint8)
    blank = np.full((200, 160, 3), 255, np.uint8)
    flat_gray = np.full((200, 160, 3), 128, np.uint8)
    all_tone, _ = tone_page(flat_gray, np.random.default_rng(1), [Screen("dots", 6.0, 30.0)])
    for key, page, expect in (("black", black, "ink"), ("blank", blank, "no strokes"),
                              ("tone", all_tone, "screentone")):
        out, request = colorize(page, [good], key=key)
        assert out.shape == page.shape and out.dtype == np.uint8
        warnings = request.diagnostics.get("warnings", [])
        assert any(key in w and expect in w for w in warnings), (key, warnings)
    for tiny in (np.zeros((1, 1, 3), np.uint8), np.full((3, 5, 3), 90, np.uint8), np.full((2, 300, 3), 255, np.uint8)):
        out, _ = colorize(tiny, [good], key="tiny")
        assert out.shape == tiny.shape and out.dtype == np.uint8
    rng = np.random.default_rng(2)
    painting = cv2.GaussianBlur(rng.integers(0, 255, (320, 320, 3)).astype(np.uint8), (0, 0), 6)
    page = draw_character(PALETTES["alice"], colored=False, frame=False)
    out, request = colorize(page, [Reference("x", "x/painting.png", painting, np.full((320, 320), 255, np.uint8), 1.0)])
    assert out.shape == page.shape
    assert any("x/painting.png" in w and "flat colors" in w for w in request.diagnostics["warnings"])
