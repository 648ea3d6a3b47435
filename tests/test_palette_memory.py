"""Palette memory: each identity's colors clustered once per job; fills snap to them so a
character keeps one color per part across pages whose references disagree slightly."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from chromaflow.conf import load_config
from chromaflow.models.colorizers import ColorizeRequest
from chromaflow.models.colorizers.region import RegionColorizer
from chromaflow.models.lines import extract_lines
from chromaflow.models.segmentation import rgb_to_lab, snap_colors
from chromaflow.models.palette_memory import PaletteMemory, build_palette_memory, reference_colors, write_palette_memory
from chromaflow.retrieval.build import build_store
from synthetic import PALETTES, draw_character, write_png

TOL = 8.0
ALICE = PALETTES["alice"]
# The same character colored three times by different hands: every fill a few CIELAB units off.
SHADES = [ALICE,
          {"head": (252, 207, 166), "eyes": (44, 94, 204), "body": (204, 44, 58)},
          {"head": (247, 203, 173), "eyes": (37, 87, 196), "body": (196, 37, 63)}]


def delta_e(a, b) -> float:
    return float(np.linalg.norm(rgb_to_lab(np.array([a])) - rgb_to_lab(np.array([b]))))


def test_shades_are_within_tolerance_and_parts_are_not():
    for part in ALICE:
        assert all(0 < delta_e(ALICE[part], s[part]) <= TOL for s in SHADES[1:]), part
    assert delta_e(ALICE["head"], ALICE["body"]) > 5 * TOL


def test_observe_clusters_keeps_heaviest_member_and_fix_freezes():
    memory = PaletteMemory()
    assert memory.observe("alice", (200, 40, 60), 0.3, TOL) == (200, 40, 60)
    assert memory.observe("alice", (204, 44, 58), 0.5, TOL) == (204, 44, 58)  # heavier member leads
    assert memory.observe("alice", (40, 90, 200), 0.2, TOL) == (40, 90, 200)  # far: a second entry
    assert memory.observe("bob", (200, 40, 60), 1.0, TOL) == (200, 40, 60)  # pools are separate
    assert [e.rgb for e in memory.entries("alice")] == [(204, 44, 58), (40, 90, 200)]
    assert memory.entries("alice")[0].weight == pytest.approx(0.8)
    memory.fix()
    assert memory.observe("alice", (196, 37, 63), 5.0, TOL) == (204, 44, 58)  # fixed: never moves
    assert memory.colors(["alice", "unknown"]).tolist() == [[204, 44, 58], [40, 90, 200]]
    with pytest.raises(ValueError, match="weight"):
        memory.observe("alice", (1, 2, 3), 0.0, TOL)


def test_memory_file_roundtrip_and_clear_errors(tmp_path):
    memory = PaletteMemory()
    memory.observe("alice", (200, 40, 60), 1.0, TOL)
    memory.observe("alice", (204, 44, 58), 0.5, TOL)
    memory.save(tmp_path / "palette_memory.json", note="extra keys are kept but ignored")
    again = PaletteMemory.load(tmp_path / "palette_memory.json")
    assert again.to_dict() == memory.to_dict()
    with pytest.raises(ValueError, match="missing.json.*not found"):
        PaletteMemory.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="bad.json"):
        PaletteMemory.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": 1, "identities": {"a": [{"rgb": [300, 0, 0]}]}}))
    with pytest.raises(ValueError, match="other.json.*8-bit RGB"):
        PaletteMemory.load(tmp_path / "other.json")


def test_snap_colors_moves_near_colors_only():
    targets = np.array([[204, 44, 58], [40, 90, 200], [250, 250, 250]], np.uint8)
    colors = np.array([[200, 40, 60], [255, 255, 255], [30, 200, 30], [42, 92, 198]], np.uint8)
    snapped = snap_colors(colors, targets, TOL)
    # near red -> remembered red; paper white stays white even next to a near-white memory
    # color; green is far from everything; near blue -> remembered blue
    assert snapped.tolist() == [[204, 44, 58], [255, 255, 255], [30, 200, 30], [40, 90, 200]]
    assert snap_colors(colors, None, TOL).tolist() == colors.tolist()


def test_reference_colors_are_the_flat_fills_without_paper():
    color = draw_character(ALICE, frame=False)
    colors = reference_colors(color, extract_lines(color).lines, TOL)
    assert set(colors) == set(ALICE.values())
    assert colors[ALICE["body"]] > colors[ALICE["eyes"]]


@pytest.fixture(scope="module")
def shaded_store(tmp_path_factory):
    """alice colored by three hands (views at different positions), bob once."""
    root = tmp_path_factory.mktemp("shades")
    for i, shade in enumerate(SHADES):
        write_png(root / "refs" / "alice" / f"alice_{i}.png", draw_character(shade, dx=10 * i - 10, frame=False))
    write_png(root / "refs" / "bob" / "bob_0.png", draw_character(PALETTES["bob"], frame=False))
    config = load_config(overrides=["colorize.work_size=448", "retrieval.work_size=128"])
    return build_store(root / "refs", root / "index", config), root


def test_pool_memory_has_one_color_per_part(shaded_store):
    store, _ = shaded_store
    memory, cache = build_palette_memory(store, TOL)
    assert memory.identities == ["alice", "bob"]
    alice = memory.colors(["alice"])
    assert len(alice) == 3  # head, eyes, body: the three shades of each part merged
    for part in ALICE:
        assert min(delta_e(c, ALICE[part]) for c in alice) <= TOL
    assert {tuple(c) for c in memory.colors(["bob"])} == set(PALETTES["bob"].values())
    assert set(cache) == set(store.references)
    # The cache is reused: same memory from cached colors alone.
    again, _ = build_palette_memory(store, TOL, cache=cache)
    assert again.to_dict() == memory.to_dict()


def test_seed_from_an_earlier_chapter_wins(shaded_store, tmp_path):
    store, _ = shaded_store
    seed = PaletteMemory()
    series_red = (202, 42, 61)  # what earlier chapters used: near all three hands' reds
    assert all(delta_e(series_red, shade["body"]) <= TOL for shade in SHADES)
    seed.observe("alice", series_red, 0.01, TOL)
    seed.save(tmp_path / "seed.json")
    path = write_palette_memory(store, tmp_path / "job_memory.json", TOL, str(tmp_path / "seed.json"))
    memory = PaletteMemory.load(path)
    reds = [e for e in memory.entries("alice") if delta_e(e.rgb, ALICE["body"]) <= TOL]
    assert len(reds) == 1 and reds[0].rgb == series_red and reds[0].fixed
    with pytest.raises(ValueError, match="nowhere.json"):
        write_palette_memory(store, tmp_path / "x.json", TOL, str(tmp_path / "nowhere.json"))


def _fill_colors(out: np.ndarray, lines: np.ndarray) -> set[tuple]:
    """Distinct colors of the paper pixels away from strokes (the flat fills)."""
    paper = cv2.erode((lines > 128).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    px = out[paper]
    values, counts = np.unique(px, axis=0, return_counts=True)
    return {tuple(int(x) for x in v) for v, c in zip(values, counts) if c > 50}


def test_pages_with_different_references_agree_with_memory(shaded_store):
    """Three pages of alice, each retrieving a different hand's reference: without memory
    each page wears its own shades; with the pool's memory all three wear the same."""
    store, _ = shaded_store
    memory, _ = build_palette_memory(store, TOL)
    colorizer = RegionColorizer()
    page = draw_character(ALICE, dx=5, colored=False)
    lines = extract_lines(page).lines
    outputs = {False: [], True: []}
    for name in sorted(r for r in store.references if r.startswith("alice/")):
        ref = store.load_reference(name, score=1.0)
        for use_memory in (False, True):
            request = ColorizeRequest(key="p", page=page, lines=lines, kind="lineart", references=[ref],
                                      identities=["alice"],
                                      remembered_colors=memory.colors(["alice"]) if use_memory else None, palette_tolerance=TOL)
            outputs[use_memory].append(_fill_colors(colorizer.colorize(request), lines))
    assert len({frozenset(c) for c in outputs[False]}) == 3  # three hands, three sets of shades
    assert len({frozenset(c) for c in outputs[True]}) == 1  # one memory, one set of colors
    remembered = {tuple(int(v) for v in c) for c in memory.colors(["alice"])}
    assert outputs[True][0] - {(255, 255, 255)} <= remembered and len(outputs[True][0]) >= 3


def test_seed_path_is_stored_absolute(tmp_path, monkeypatch):
    """job.json keeps the seed path: a rerun from another directory must find the file."""
    monkeypatch.chdir(tmp_path)
    config = load_config(overrides=["colorize.palette_memory_seed=ch1/palette_memory.json"])
    assert config.colorize.palette_memory_seed == str(tmp_path / "ch1" / "palette_memory.json")
