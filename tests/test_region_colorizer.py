"""Colorizer backends on synthetic characters: sizes, flat fills, lines, shading, episodes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from chromaflow.conf import Config
from chromaflow.models.colorizers import BACKENDS, ColorizeRequest, Reference, build_colorizer
from chromaflow.models.colorizers.composite import (BARE_PAPER_L, MIN_BARE_FILL_L, keep_page_luminance,
                                                    with_bare_paper_filled)
from chromaflow.models.colorizers.region import RegionColorizer, RegionParams
from chromaflow.models.lines import extract_lines
from chromaflow.models.metrics import pair_metrics
from chromaflow.models.propagate import TemporalColorizer, propagate_clip
from synthetic import PALETTES, draw_character


def reference(name: str, **kw) -> Reference:
    color = draw_character(PALETTES[name], frame=False, **kw)
    return Reference(name, f"{name}.png", color, extract_lines(color).lines, score=1.0)


def request_for(page: np.ndarray, refs: list[Reference]) -> ColorizeRequest:
    art = extract_lines(page)
    return ColorizeRequest("p0", page, art.lines, art.kind, refs, [r.identity for r in refs])


@pytest.mark.parametrize("backend", ["region", "gray_rank", "welsh", "dominant"])
@pytest.mark.parametrize("with_refs", [True, False])
def test_every_backend_returns_rgb_of_the_page_size(backend, with_refs):
    assert backend in BACKENDS
    page = draw_character(PALETTES["alice"], size=(200, 280), colored=False, frame=False)
    refs = [reference("alice", dx=10)] if with_refs else []
    config = Config()
    config.colorize.backend = backend
    out = build_colorizer(config).colorize(request_for(page, refs))
    assert out.shape == page.shape and out.dtype == np.uint8


def test_dominant_baseline_paints_every_fill_pixel_the_most_frequent_reference_color():
    color = np.full((40, 40, 3), 255, np.uint8)
    color[:, :20] = (200, 30, 30)  # 800 px: the dominant color
    color[:, 20:35] = (30, 200, 30)  # 600 px
    color[:, 35:] = (0, 0, 0)  # 200 px of ink, never counted
    lines = np.full((40, 40), 255, np.uint8)
    lines[:, 35:] = 0
    page_lines = np.full((30, 30), 255, np.uint8)
    page_lines[10, :] = 0
    page = cv2.cvtColor(page_lines, cv2.COLOR_GRAY2RGB)
    config = Config()
    config.colorize.backend = "dominant"
    out = build_colorizer(config).colorize(ColorizeRequest("p", page, page_lines, "line",
                                                           [Reference("a", "a.png", color, lines, 1.0)]))
    assert (out[page_lines == 255] == (200, 30, 30)).all() and (out[10] == 0).all()


def test_region_colorizer_fills_from_a_reference_at_another_scale_and_position():
    page = draw_character(PALETTES["bob"], colored=False, frame=False)
    truth = draw_character(PALETTES["bob"], frame=False)
    refs = [reference("bob", dx=25, scale=0.8), reference("bob", dx=-20, dy=10, scale=1.1)]
    out = RegionColorizer().colorize(request_for(page, refs))
    m = pair_metrics(out, truth, cv2.cvtColor(page, cv2.COLOR_RGB2GRAY))
    assert m["flat_color_accuracy"] > 0.95
    assert m["background_accuracy"] > 0.99
    assert m["segment_accuracy"] == 1.0
    # Lines stay ink, fills are the reference's exact flat colors.
    ink = extract_lines(page).lines == 0
    assert out[ink].mean() < 40
    head = out[int(448 * 0.35) - 20, 160]
    assert tuple(head) == PALETTES["bob"]["head"]


def test_region_colorizer_votes_over_all_references():
    """Two references agree, one (a different identity) disagrees: the majority wins."""
    page = draw_character(PALETTES["alice"], colored=False, frame=False)
    refs = [reference("alice", dx=5), reference("alice", dx=-5), reference("bob")]
    out = RegionColorizer().colorize(request_for(page, refs))
    assert tuple(out[int(448 * 0.35) - 20, 160]) == PALETTES["alice"]["head"]


def test_region_colorizer_is_deterministic():
    page = draw_character(PALETTES["alice"], colored=False, frame=False, dx=8)
    refs = [reference("alice"), reference("alice", scale=0.9)]
    a = RegionColorizer().colorize(request_for(page, refs))
    b = RegionColorizer().colorize(request_for(page, refs))
    assert np.array_equal(a, b)


def test_one_colorizer_serves_pages_of_different_pools_as_fresh_ones_would():
    # Prepared pools are kept by content: two pools with the same names (other content),
    # pages alternating, give what a fresh colorizer gives, and each page its own colors.
    pools = {name: [Reference("", "ref.png", r.color, r.lines, 1.0) for r in (reference(name), reference(name, dx=6))]
             for name in ("alice", "bob")}
    pages = {name: draw_character(PALETTES[name], colored=False, frame=False, dx=-4) for name in pools}
    shared = RegionColorizer()
    for name in ("alice", "bob", "alice", "bob"):
        out = shared.colorize(request_for(pages[name], pools[name]))
        assert tuple(out[int(448 * 0.35) - 20, 160]) == PALETTES[name]["head"]
        assert np.array_equal(out, RegionColorizer().colorize(request_for(pages[name], pools[name])))


def test_gray_page_keeps_its_shading_and_colors_its_bare_paper():
    line = draw_character(PALETTES["alice"], colored=False, frame=False)
    page = line.copy()
    page[260:300, 100:220] = np.minimum(page[260:300, 100:220], 150)  # shading on part of the body
    refs = [reference("alice")]
    req = ColorizeRequest("p0", page, extract_lines(line).lines, "gray", refs)
    out = RegionColorizer().colorize(req)
    lab_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0].astype(int)
    lab_page = cv2.cvtColor(page, cv2.COLOR_RGB2LAB)[..., 0].astype(int)
    shaded = np.zeros(page.shape[:2], bool)
    shaded[262:298, 102:218] = True
    assert np.abs(lab_out - lab_page)[shaded].max() <= 3  # the shaded body: lightness from the page
    body = out[280, 160].astype(int)
    assert body[0] > body[2] + 40  # chroma from the (red) body fill
    # The head is bare paper on the page (as skin mostly is in manga): it takes the head's
    # color, lightness included, instead of staying white.
    head = out[200, 160].astype(int)
    assert np.abs(head - np.array(PALETTES["alice"]["head"])).max() <= 12, head
    assert tuple(out[20, 20]) == (255, 255, 255)  # the background paper stays white


def test_bare_paper_regions_take_a_light_fills_lightness_and_the_rest_the_pages():
    labels = np.zeros((10, 40), np.int32)
    labels[:, :10], labels[:, 10:20], labels[:, 30:] = 1, 2, 3  # columns 20..29 are ink
    page_l = np.full((10, 40), 255, np.uint8)
    page_l[:, 10:20] = 230  # a light screen: not bare (its mean is under BARE_PAPER_L), lighter than skin
    page_l[0, :10] = int(BARE_PAPER_L) - 10  # one row of region 1 a little darker: its mean stays bare
    page_l[5, 4] = 120  # the paper side of an anti-aliased stroke in it
    fill = np.zeros((10, 40, 3), np.uint8)
    fill[:, :30] = (250, 205, 170)  # skin: light, may be printed as bare paper
    fill[:, 30:] = (200, 40, 60)  # a dark red would have been screened
    skin_l = int(cv2.cvtColor(fill[:1, :1], cv2.COLOR_RGB2LAB)[0, 0, 0])
    assert skin_l >= MIN_BARE_FILL_L > int(cv2.cvtColor(fill[:1, 30:31], cv2.COLOR_RGB2LAB)[0, 0, 0])
    page_l[7, 7] = skin_l - 10  # scan noise a little darker than the fill: paper all the same
    out = with_bare_paper_filled(page_l, cv2.cvtColor(fill, cv2.COLOR_RGB2LAB)[..., 0], labels)
    assert out[5, 4] == 120  # clearly darker than the fill: the page's lightness (the stroke's edge stays)
    out[5, 4] = skin_l
    assert (out[:, :10] == skin_l).all()  # bare paper, light fill: the fill's lightness, the darker row too
    assert (out[:, 10:20] == 230).all() and (out[:, 20:30] == 255).all()  # screened region, ink: the page's
    assert (out[:, 30:] == 255).all()  # bare paper under a dark fill: the page is right, white


def test_page_luminance_by_palette_index_equals_it_by_color():
    rng = np.random.default_rng(5)
    palette = rng.integers(0, 256, (12, 3)).astype(np.uint8)
    palette[3] = palette[7]  # two entries of one color: equal colors, different indices
    index = rng.integers(0, len(palette), (40, 50))
    index[:, :10] = 11  # never-used entries and one big flat fill
    lightness = rng.integers(0, 256, (40, 50)).astype(np.uint8)
    lightness[:20] = 180
    fill = palette[index]
    by_color = keep_page_luminance(fill, None, lightness)
    assert np.array_equal(keep_page_luminance(fill, None, lightness, index=index), by_color)
    lab = cv2.cvtColor(by_color, cv2.COLOR_RGB2LAB).astype(np.float32)
    assert np.abs(lab[..., 0] - lightness).max() <= 2  # the lightness is the page's
    # Chroma is only reduced, never turned: where some is left, the hue is the fill's.
    fill_lab = cv2.cvtColor(fill, cv2.COLOR_RGB2LAB).astype(np.float32)
    a, b, fa, fb = lab[..., 1] - 128, lab[..., 2] - 128, fill_lab[..., 1] - 128, fill_lab[..., 2] - 128
    kept = np.hypot(a, b) > 8
    assert kept.mean() > 0.3 and ((a * fa + b * fb)[kept] > 0).all()
    # The page's own lightness when a page is given.
    page = cv2.cvtColor(cv2.cvtColor(np.dstack([lightness, np.full_like(lightness, 128), np.full_like(lightness, 128)]),
                                     cv2.COLOR_LAB2RGB), cv2.COLOR_RGB2GRAY)
    page_l = cv2.cvtColor(cv2.cvtColor(page, cv2.COLOR_GRAY2RGB), cv2.COLOR_RGB2LAB)[..., 0]
    assert np.array_equal(keep_page_luminance(fill, cv2.cvtColor(page, cv2.COLOR_GRAY2RGB)),
                          keep_page_luminance(fill, None, page_l))


def test_colored_trace_lines_take_the_region_color():
    page = np.full((120, 120, 3), 255, np.uint8)
    cv2.rectangle(page, (10, 10), (110, 110), (0, 0, 0), 2)
    cv2.line(page, (12, 60), (108, 60), (255, 0, 0), 1)  # shadow border, not a drawn line
    key = page.copy()
    key[12:60, 12:109] = (200, 180, 250)
    key[61:109, 12:109] = (150, 130, 220)
    key[60, 12:109] = (200, 180, 250)
    lines = extract_lines(page).lines
    ref = Reference("", "key", key, lines, 1.0)
    out = RegionColorizer().colorize(ColorizeRequest("f1", page, lines, "lineart", [ref]))
    assert tuple(out[60, 60]) in {(200, 180, 250), (150, 130, 220)}  # no red left
    assert tuple(out[30, 60]) == (200, 180, 250) and tuple(out[90, 60]) == (150, 130, 220)
    assert out[10, 60].max() < 30  # black lines stay


def test_propagation_follows_a_moving_character():
    key_color = draw_character(PALETTES["alice"], frame=False)
    key_lines = extract_lines(draw_character(PALETTES["alice"], colored=False, frame=False)).lines
    frames = [draw_character(PALETTES["alice"], colored=False, frame=False, dx=6 * t, dy=3 * t) for t in (1, 2, 3)]
    outs = propagate_clip(key_color, key_lines, [extract_lines(f).lines for f in frames])
    truth = draw_character(PALETTES["alice"], frame=False, dx=18, dy=9)
    m = pair_metrics(outs[-1], truth, cv2.cvtColor(frames[-1], cv2.COLOR_RGB2GRAY))
    assert m["flat_color_accuracy"] > 0.95 and m["background_accuracy"] > 0.99


def test_temporal_colorizer_uses_the_previous_frame_of_the_scene():
    key = reference("alice")
    wrapped = TemporalColorizer(RegionColorizer())
    first = draw_character(PALETTES["alice"], colored=False, frame=False, dx=4)
    wrapped.colorize(request_for(first, [key]))
    # Second frame: the retrieved reference is the wrong identity; the previous frame wins.
    second = draw_character(PALETTES["alice"], colored=False, frame=False, dx=8)
    out = wrapped.colorize(request_for(second, [reference("bob")]))
    assert tuple(out[int(448 * 0.35) - 20, 168]) == PALETTES["alice"]["head"]


@pytest.mark.parametrize("backend", ["region", "gray_rank", "welsh", "dominant"])
def test_backends_survive_degenerate_pages_and_references(backend):
    config = Config()
    config.colorize.backend = backend
    colorizer = build_colorizer(config)
    good = reference("alice")
    odd = Reference("alice", "odd.png", good.color, np.full((10, 10), 255, np.uint8), score=0.0)  # lines of another size
    blank = Reference("", "blank.png", np.full((50, 50, 3), 255, np.uint8), np.full((50, 50), 255, np.uint8), 1.0)
    for page in (np.full((90, 70, 3), 255, np.uint8), np.zeros((90, 70, 3), np.uint8), np.full((3, 4, 3), 255, np.uint8)):
        lines = extract_lines(page).lines
        for refs in ([good], [odd, blank], []):
            out = colorizer.colorize(ColorizeRequest("p", page, lines, "lineart", refs))
            assert out.shape == page.shape and out.dtype == np.uint8


def _shape(kind: str, fill, colored: bool = True) -> np.ndarray:
    """A ball (circle) or a box (square) with thick outlines, as another character's drawing."""
    img = np.full((320, 320, 3), 255, np.uint8)
    color = fill if colored else (255, 255, 255)
    if kind == "ball":
        cv2.circle(img, (160, 160), 100, color, -1)
        cv2.circle(img, (160, 160), 100, (0, 0, 0), 6)
    else:
        cv2.rectangle(img, (70, 70), (250, 250), color, -1)
        cv2.rectangle(img, (70, 70), (250, 250), (0, 0, 0), 6)
    return img


def test_references_that_fit_the_strokes_lead_over_look_alikes():
    """An unknown-identity page gets references of several characters: a box scored higher
    by retrieval than the ball the page really shows. Weighted by stroke fit, the ball's
    color wins and the box's fill does not spill into the background."""
    page = _shape("ball", None, colored=False)
    lines = extract_lines(page).lines
    refs = []
    for kind, fill, score in (("box", (40, 160, 60), 0.9), ("ball", (200, 40, 60), 0.8)):
        color = _shape(kind, fill)
        refs.append(Reference(kind, kind, color, extract_lines(color).lines, score=score))
    out = RegionColorizer().colorize(ColorizeRequest("p", page, lines, "line", refs))
    inside = out[140:180, 140:180].reshape(-1, 3)
    red = np.all(np.abs(inside.astype(int) - (200, 40, 60)) <= 2, axis=1).mean()
    # inside the box drawing, outside the ball: background on this page
    corners = np.concatenate([out[72:82, 72:82].reshape(-1, 3), out[238:248, 238:248].reshape(-1, 3)])
    white_corners = np.all(corners >= 250, axis=1).mean()
    assert red > 0.95 and white_corners > 0.95, (red, white_corners)


def test_region_params_come_from_the_config():
    from chromaflow.conf import ColorizeConfig

    defaults, config = RegionParams(), ColorizeConfig()
    assert defaults.match_weight == config.region_match_weight and defaults.fit_power == config.region_fit_power
    assert RegionParams(match_weight=1.0).match_weight == 1.0
    with pytest.raises(TypeError, match="nope"):
        RegionParams(nope=1)
