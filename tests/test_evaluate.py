"""The evaluation protocol and flow on a 2-identity mini dataset generated in the test."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from chromaflow.conf import Config
from chromaflow.flows.evaluate import run_evaluation
from chromaflow.storage.eval_dataset import POSE, RECOLOR, scan_eval_dataset
from synthetic import PALETTES, draw_character, make_refs, write_png

SIZE = (160, 224)
RECOLOR_PALETTES = [PALETTES["alice"], PALETTES["bob"],
                    {"head": (230, 190, 120), "eyes": (90, 60, 30), "body": (60, 160, 80)}]


@pytest.fixture(scope="module")
def mini_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalset")
    # `alice`: one palette, three drawings (pose); `trio`: one drawing, three palettes (recolor).
    for i, (dx, scale) in enumerate([(0, 1.0), (12, 0.85), (-10, 1.1)]):
        kw = dict(size=SIZE, dx=dx, scale=scale, frame=False)
        write_png(root / "alice" / f"v{i}_line.png", draw_character(PALETTES["alice"], colored=False, **kw))
        write_png(root / "alice" / f"v{i}_color.png", draw_character(PALETTES["alice"], **kw))
    for i, palette in enumerate(RECOLOR_PALETTES):
        write_png(root / "trio" / f"c{i}_line.png", draw_character(palette, size=SIZE, colored=False, frame=False))
        write_png(root / "trio" / f"c{i}_color.png", draw_character(palette, size=SIZE, frame=False))
    # A corrupt color image: reported and skipped, the rest evaluated.
    write_png(root / "alice" / "v9_line.png", draw_character(PALETTES["alice"], size=SIZE, colored=False))
    (root / "alice" / "v9_color.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "manifest.json").write_text(json.dumps({"identities": {"alice": {"kind": POSE},
                                                                   "trio": {"kind": RECOLOR}}}))
    return root


def test_scan_reads_identities_kinds_and_views(mini_dataset):
    data = scan_eval_dataset(mini_dataset)
    assert [(i.name, i.kind, len(i.views)) for i in data.identities] == [("alice", POSE, 4), ("trio", RECOLOR, 3)]


def test_run_evaluation_outputs_and_protocol(mini_dataset, tmp_path):
    backends = ["region", "gray_rank", "welsh"]
    metrics = run_evaluation(mini_dataset, tmp_path / "out", Config(), backends)
    for name in ("metrics.json", "metrics.parquet", "report.html"):
        assert (tmp_path / "out" / name).is_file()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    # The corrupt file is named once, and its view is skipped.
    assert len(metrics["problems"]) == 1 and "v9_color.png" in metrics["problems"][0]
    keys = {"flat_color_accuracy", "background_accuracy", "segment_accuracy", "segment_pixel_accuracy",
            "psnr", "ssim", "line_f1", "pairs", "identities"}
    for name in backends:
        entry = metrics["backends"][name]
        assert keys <= set(entry)
        # pose: 3 views -> 3 pairs (leave one out); recolor: 3 palettes -> 3 x 2 pairs
        assert entry["pairs"] == 9
        assert entry["identities"]["alice"]["pairs"] == 3 and entry["identities"]["trio"]["pairs"] == 6
    assert metrics["backends"]["region"]["line_f1"] > 0.9
    region, palette = metrics["backends"]["region"], metrics["backends"]["gray_rank"]
    assert region["flat_color_accuracy"] > 0.9
    assert region["flat_color_accuracy"] > palette["flat_color_accuracy"] + 0.1
    assert metrics["kinds"]["region"]["recolor"]["flat_color_accuracy"] > 0.95
    # two identities: identity retrieval is reported too
    assert 0.0 <= metrics["retrieval_top1"] <= metrics["retrieval_top3"] <= 1.0
    table = pq.read_table(tmp_path / "out" / "metrics.parquet")
    assert table.num_rows == 27 and set(table.column("backend").to_pylist()) == set(backends)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<img" in html and "sortable" in html and "ground truth" in html


def test_run_evaluation_is_deterministic(mini_dataset, tmp_path):
    a = run_evaluation(mini_dataset, tmp_path / "a", Config(), ["region"])
    b = run_evaluation(mini_dataset, tmp_path / "b", Config(), ["region"])
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    assert a == b


def test_unknown_backend_is_one_clear_error(mini_dataset, tmp_path):
    with pytest.raises(ValueError, match="unknown colorize backend.*nope"):
        run_evaluation(mini_dataset, tmp_path, Config(), ["nope"])


def test_evaluate_flow_runs_under_prefect(mini_dataset, tmp_path, prefect_harness):
    from chromaflow.flows.evaluate import evaluate_flow

    metrics = evaluate_flow(str(mini_dataset), str(tmp_path / "flow"), backends=["region"],
                            overrides=["colorize.work_size=512"])
    assert metrics["backends"]["region"]["pairs"] == 9
    assert (tmp_path / "flow" / "metrics.json").is_file()


def test_styles_and_conditions_are_evaluated_separately(mini_dataset, tmp_path):
    from chromaflow.models.evaluation import Variants

    variants = Variants(("line", "tone"), ("plain", "warp", "balloons"))
    metrics = run_evaluation(mini_dataset, tmp_path / "v", Config(), ["region"], variants)
    region = metrics["variants"]["region"]
    assert set(region) == {"line/plain", "line/warp", "line/balloons", "tone/plain", "tone/warp", "tone/balloons"}
    assert all(entry["pairs"] == 9 for entry in region.values())
    assert metrics["backends"]["region"] == {k: v for k, v in region["line/plain"].items() if k != "kinds"}
    # Every tone page was seen as tone, every line page as line art.
    assert region["tone/plain"]["style_detected"] == 1.0 and region["line/plain"]["style_detected"] == 1.0
    # Balloons are scored on their own; without balloons there is nothing to score.
    assert region["line/balloons"]["balloon_paper"] > 0.99 and region["line/balloons"]["lettering_black"] > 0.9
    assert region["line/plain"]["balloon_paper"] is None
    assert region["line/warp"]["flat_color_accuracy"] > 0.8
    table = pq.read_table(tmp_path / "v" / "metrics.parquet")
    assert table.num_rows == 54 and set(table.column("condition").to_pylist()) == {"plain", "warp", "balloons"}


def test_framing_cases_are_reported_by_kind(mini_dataset, tmp_path):
    """Framing mixes two cases that fail differently (close-up references for a full
    page, a close-up page for full references): each pair's case is in metrics.parquet's
    `framing` column and metrics.json has the means per case, over the same pairs."""
    from chromaflow.models.evaluation import Variants, load_identity_views, make_pairs, pair_case

    metrics = run_evaluation(mini_dataset, tmp_path / "f", Config(), ["region"], Variants(("line",), ("framing",)))
    framings = metrics["variants"]["region"]["line/framing"]["framings"]
    table = pq.read_table(tmp_path / "f" / "metrics.parquet").to_pylist()
    assert set(framings) == {"close-up references", "close-up page"}
    for name, entry in framings.items():
        rows = [r for r in table if r["framing"] == name]
        assert entry["pairs"] == len(rows) > 0
        assert entry["flat_color_accuracy"] == pytest.approx(np.mean([r["flat_color_accuracy"] for r in rows]))
    assert sum(e["pairs"] for e in framings.values()) == len(table) == 9
    # A close-up page is the page zoomed in: its case holds a different page than the
    # pair's line art; close-up references keep the page as it is.
    data = scan_eval_dataset(mini_dataset)
    for identity in data.identities:
        views = load_identity_views(data, identity.name, Config(), [])
        for pair in make_pairs(identity.name, identity.kind, views):
            case = pair_case(pair, "line", "framing")
            row = next(r for r in table if r["identity"] == identity.name and r["view"] == pair.target.view.name
                       and r["references"] == ",".join(v.view.name for v in pair.references))
            same_page = np.array_equal(case.page, pair.target.line_rgb)
            assert same_page == (row["framing"] == "close-up references")


def test_unknown_style_is_one_clear_error():
    from chromaflow.models.evaluation import Variants

    with pytest.raises(ValueError, match="unknown evaluation style.*sepia"):
        Variants(("line", "sepia"))


def test_metrics_table_has_one_row_per_backend_and_variant():
    from chromaflow.tasks.evaluate import metrics_table

    metrics = {"variants": {"region": {"line/plain": {"flat_color_accuracy": 0.91234, "pairs": 3},
                                       "tone/warp": {"flat_color_accuracy": 0.5, "balloon_paper": None, "pairs": 3}},
                            "dominant": {"line/plain": {"flat_color_accuracy": 0.25, "pairs": 3}}}}
    rows = metrics_table(metrics)
    assert [(r["backend"], r["variant"]) for r in rows] == [("region", "line/plain"), ("region", "tone/warp"),
                                                            ("dominant", "line/plain")]
    assert rows[0]["flat_color_accuracy"] == 0.9123 and rows[1]["balloon_paper"] is None and rows[2]["pairs"] == 3


def test_clips_are_colored_from_their_keyframe_and_scored(mini_dataset, tmp_path):
    """A still clip (the same drawing in every frame): propagated from its first ground-truth
    frame it is colored as the ground truth everywhere and does not flicker; a clip without
    ground truth is one problem line naming it."""
    still = tmp_path / "clips" / "still"
    line = draw_character(PALETTES["bob"], size=SIZE, colored=False, frame=False)
    color = draw_character(PALETTES["bob"], size=SIZE, frame=False)
    for i in range(4):
        write_png(still / "line" / f"{i:04d}.png", line)
    for i in (0, 1, 2):
        write_png(still / "gt" / f"{i:04d}.png", color)
    write_png(tmp_path / "clips" / "no_truth" / "line" / "0000.png", line)
    metrics = run_evaluation(mini_dataset, tmp_path / "out", Config(), ["region"], clips=tmp_path / "clips")
    (clip,) = metrics["clips"]
    assert clip["clip"] == "still" and clip["frames"] == 4 and clip["ground_truth_frames"] == 3
    assert clip["flat_color_accuracy"] > 0.97 and clip["flicker"] < 1.0 and clip["gt_flicker"] == 0
    assert any(p.startswith(f"{tmp_path / 'clips' / 'no_truth'}/gt: no ground truth") and p.endswith("clip skipped")
               for p in metrics["problems"])
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["clips"] == metrics["clips"]


def test_pages_with_two_characters_are_scored_through_the_stages(mini_dataset, tmp_path):
    """Two characters side by side on each page (ground-truth boxes from the drawings' own
    ink): the stages find both, one instance each, and the scores land in metrics.json.
    (alice and bob are the same drawing in line art, so which is which is not checked.)"""
    import numpy as np

    layout = tmp_path / "multi"
    for p in range(2):
        left, right = ("alice", "bob") if p == 0 else ("bob", "alice")
        halves = [(draw_character(PALETTES[n], colored=False, frame=False), draw_character(PALETTES[n], frame=False))
                  for n in (left, right)]
        line = np.concatenate([h[0] for h in halves], axis=1)
        truth = []
        for k, (name, (half, _)) in enumerate(zip((left, right), halves)):
            ys, xs = np.nonzero(half.min(axis=2) < 128)
            x0 = k * half.shape[1]
            truth.append({"identity": name, "bbox": [int(xs.min()) + x0, int(ys.min()), int(xs.max()) + 1 + x0,
                                                     int(ys.max()) + 1]})
        write_png(layout / "pages" / f"p{p}_line.png", line)
        write_png(layout / "pages" / f"p{p}_color.png", np.concatenate([h[1] for h in halves], axis=1))
        (layout / "pages" / f"p{p}_instances.json").write_text(json.dumps(truth))
    make_refs(layout / "refs")
    metrics = run_evaluation(mini_dataset, tmp_path / "out", Config(), ["region"], instances=layout)
    scores = metrics["instances"]
    assert scores["instance_recall"] == 1.0 and scores["instance_precision"] == 1.0
    assert [len(page["identities"]) for page in scores["pages"]] == [2, 2]
    assert 0.0 <= scores["flat_color_accuracy"] <= 1.0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["instances"]["instance_recall"] == 1.0
