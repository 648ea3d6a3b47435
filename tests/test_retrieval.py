"""Reference store, descriptor, FAISS index, identities and the ColorFlow canvas.

Fixtures are drawn here: three identities with clearly different shapes ("ball", "box",
"roof"), each a few colored views with thick black outlines, plus one unnamed reference.
Queries are line-art-only drawings of the same shapes at other positions.
"""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest

from chromaflow.conf import load_config
from chromaflow.models.lines import extract_lines
from chromaflow.retrieval import index as faiss_index
from chromaflow.models.colorflow.canvas import CELL_TABLE, build_canvas, choose_work_size
from chromaflow.stages.retrieve import canvas_for_page, canvas_sample
from chromaflow.retrieval.descriptor import EdgeHistogramEmbedder, describe_lines, descriptor_dim
from chromaflow.retrieval.evaluation import retrieval_topk_accuracy
from chromaflow.retrieval.identity import (
    UNKNOWN, assign_identities, assign_scene_identities, identities_for_page, identity_votes)
from chromaflow.models.patches import quadrant_boxes, reference_boxes
from chromaflow.retrieval.references import ReferenceFolderError
from chromaflow.retrieval.build import build_store
from chromaflow.retrieval.search import ReferenceIndex
from chromaflow.retrieval.store_format import EmbedderMismatchError, StoreError

SIZE = 160
FAST = ["colorize.work_size=160", "retrieval.work_size=128"]


def draw(shape: str, fill=(200, 60, 60), dx: int = 0, dy: int = 0, scale: float = 1.0, colored: bool = True):
    """RGB drawing of a shape with 5-px black outlines; colored=False gives line art only."""
    img = np.full((SIZE, SIZE, 3), 255, np.uint8)
    c = (SIZE // 2 + dx, SIZE // 2 + dy)
    r = int(50 * scale)
    fill = tuple(int(v) for v in fill) if colored else (255, 255, 255)
    ink = (0, 0, 0)
    if shape == "ball":
        cv2.circle(img, c, r, fill, -1)
        cv2.circle(img, c, r, ink, 5)
        cv2.circle(img, (c[0] - r // 3, c[1] - r // 4), r // 6, ink, 4)
        cv2.circle(img, (c[0] + r // 3, c[1] - r // 4), r // 6, ink, 4)
    elif shape == "box":
        p0, p1 = (c[0] - r, c[1] - r), (c[0] + r, c[1] + r)
        cv2.rectangle(img, p0, p1, fill, -1)
        cv2.rectangle(img, p0, p1, ink, 5)
        cv2.line(img, (c[0], c[1] - r), (c[0], c[1] + r), ink, 5)
        cv2.line(img, (c[0] - r, c[1]), (c[0] + r, c[1]), ink, 5)
    elif shape == "roof":
        pts = np.array([(c[0], c[1] - r), (c[0] - r, c[1] + r), (c[0] + r, c[1] + r)], np.int32)
        cv2.fillPoly(img, [pts], fill)
        cv2.polylines(img, [pts], True, ink, 5)
        for k in (1, 2):
            y = c[1] - r + k * 2 * r // 3
            half = r * k * 2 // 3 // 2 + 4
            cv2.line(img, (c[0] - half, y), (c[0] + half, y), ink, 5)
    else:
        raise ValueError(shape)
    return img


FILLS = [(200, 60, 60), (60, 160, 220), (90, 190, 90)]
VIEWS = [(0, 0, 1.0), (8, -6, 0.9), (-8, 6, 1.1)]


def write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_pool(root, shapes=("ball", "box", "roof"), unnamed=True):
    for s_i, shape in enumerate(shapes):
        for v, (dx, dy, scale) in enumerate(VIEWS):
            write(root / shape / f"v{v}.png", draw(shape, FILLS[(s_i + v) % 3], dx, dy, scale))
    if unnamed:
        bg = np.full((SIZE, SIZE, 3), 255, np.uint8)
        for x in range(10, SIZE, 30):
            cv2.line(bg, (x, 0), (x, SIZE), (0, 0, 0), 3)
        write(root / "stripes.png", bg)
    return root


def query(shape, dx=4, dy=3, scale=0.95):
    page = draw(shape, dx=dx, dy=dy, scale=scale, colored=False)
    return extract_lines(page).lines, page


@pytest.fixture(scope="module")
def config():
    return load_config(overrides=FAST)


@pytest.fixture(scope="module")
def built(tmp_path_factory, config):
    root = tmp_path_factory.mktemp("pool")
    refs = make_pool(root / "refs")
    store = build_store(refs, root / "index", config)
    return refs, root / "index", store


# ---------------------------------------------------------------------------- patches
def test_colorflow_patch_boxes():
    assert quadrant_boxes(400, 200) == [(0, 0, 300, 150), (100, 0, 400, 150), (0, 50, 300, 200), (100, 50, 400, 200)]
    boxes = reference_boxes(400, 200)
    assert [n for n, _ in boxes] == ["full", "tl", "tr", "bl", "br"] and boxes[0][1] == (0, 0, 400, 200)


# ---------------------------------------------------------------------------- descriptor
def test_descriptor_is_unit_norm_and_blank_is_zero():
    lines, _ = query("ball")
    vec = describe_lines(lines, 128)
    assert vec.shape == (descriptor_dim(),) and vec.dtype == np.float32
    assert abs(np.linalg.norm(vec) - 1) < 1e-5
    assert not describe_lines(np.full((50, 80), 255, np.uint8), 128).any()


def test_descriptor_matches_colored_reference_to_its_line_art_shape():
    """A colored reference turned into line art (thin double edges) is closer to the same
    shape drawn as thick line art than to other shapes."""
    embedder = EdgeHistogramEmbedder(128)
    q = embedder.embed([query("box")[0]])[0]
    refs = {s: embedder.embed([extract_lines(draw(s, dx=6)).lines])[0] for s in ("ball", "box", "roof")}
    sims = {s: float(q @ v) for s, v in refs.items()}
    assert max(sims, key=sims.get) == "box", sims


# ---------------------------------------------------------------------------- store
def test_build_open_search(built, config):
    refs, out, store = built
    assert store.identities == ["", "ball", "box", "roof"]
    assert len(store) == 10 * 5 and store.index_kind == "flat"
    assert (out / "store.json").exists()
    assert sorted(store.info["files"]) == ["embeddings.npy", "patches.faiss", "patches.parquet"]
    for name in store.info["files"].values():
        assert (out / name).exists()
    reopened = ReferenceIndex.open(out)
    assert reopened.fingerprint == store.fingerprint
    for shape in ("ball", "box", "roof"):
        lines, page = query(shape)
        result = reopened.search(lines, page, top_k=3)
        json.dumps(result)  # JSON-serializable
        assert result["references"][0]["identity"] == shape, result["references"]
        assert len(result["references"]) == 3
        assert len({r["name"] for r in result["references"]}) == 3
        assert [r["score"] for r in result["references"]] == sorted((r["score"] for r in result["references"]),
                                                                   reverse=True)
        assert len(result["quadrants"]) == 4 and all(len(q) == 3 for q in result["quadrants"])
        assert result["identities"] == [shape]
        assert abs(sum(result["identity_scores"].values()) - 1) < 1e-4


def test_load_reference_and_patch(built):
    _, _, store = built
    ref = store.load_reference("box/v1.png")
    assert ref.identity == "box" and ref.color.shape == (SIZE, SIZE, 3) and ref.lines.shape == (SIZE, SIZE)
    assert set(np.unique(ref.lines)) <= {0, 255}
    lines, page = query("box")
    hit = store.search(lines, page, 3)["quadrants"][3][0]
    patch = store.load_patch(hit["name"], hit["box"])
    x0, y0, x1, y1 = hit["box"]
    assert patch.shape == (y1 - y0, x1 - x0, 3)
    with pytest.raises(StoreError, match="nobody.png"):
        store.load_reference("nobody.png")


def test_identity_restriction_and_unknown_identity(built):
    _, _, store = built
    lines, page = query("ball")
    result = store.search(lines, page, 5, identities=["roof"])
    assert {r["identity"] for r in result["references"]} <= {"roof", ""}
    assert result["identities"] == ["roof"]
    assert all(h["identity"] in ("roof", "") for q in result["quadrants"] for h in q)
    with pytest.raises(StoreError, match="'nobody'"):
        store.search(lines, page, 3, identities=["nobody"])


def test_unreadable_reference_is_skipped_with_warning(tmp_path, config):
    refs = make_pool(tmp_path / "refs", shapes=("ball",), unnamed=False)
    (refs / "ball" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.warns(UserWarning, match="broken.png"):
        store = build_store(refs, tmp_path / "index", config)
    assert "ball/broken.png" not in store.references and len(store.references) == 3
    assert any("broken.png" in s for s in store.info["skipped"])


def test_empty_or_all_broken_folder_is_an_error(tmp_path, config):
    (tmp_path / "refs").mkdir()
    with pytest.raises(ReferenceFolderError):
        build_store(tmp_path / "refs", tmp_path / "index", config)
    (tmp_path / "refs" / "bad.png").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(ReferenceFolderError, match="no readable"):
        build_store(tmp_path / "refs", tmp_path / "index", config)


def test_incremental_build_embeds_only_new_files(tmp_path, config):
    refs = make_pool(tmp_path / "refs", shapes=("ball", "box"), unnamed=False)
    first = build_store(refs, tmp_path / "index", config)
    assert first.info["reused_references"] == 0
    write(refs / "roof" / "v0.png", draw("roof"))
    second = build_store(refs, tmp_path / "index", config)
    assert second.info["reused_references"] == 6 and second.info["num_references"] == 7
    assert second.fingerprint != first.fingerprint
    # Superseded data files are gone; the first store's files were replaced, not edited.
    assert len(list((tmp_path / "index").glob("embeddings.*.npy"))) == 1
    # Reused vectors are bit-identical to the first build's.
    np.testing.assert_array_equal(second.embeddings[:30], first.embeddings[:30])
    # A changed file is re-embedded, a removed one leaves the store (and its images).
    write(refs / "ball" / "v0.png", draw("ball", fill=(10, 10, 250)))
    (refs / "box" / "v2.png").unlink()
    third = build_store(refs, tmp_path / "index", config)
    assert third.info["reused_references"] == 5 and "box/v2.png" not in third.references
    assert not (tmp_path / "index" / "images" / "box" / "v2.png.color.png").exists()
    # Other embedding settings: nothing is reused.
    other = load_config(overrides=FAST + ["lines.min_component_area=20"])
    assert build_store(refs, tmp_path / "index", other).info["reused_references"] == 0


def test_index_refuses_other_embedder(built):
    _, out, _ = built
    with pytest.raises(EmbedderMismatchError, match="rebuild the index"):
        ReferenceIndex.open(out, load_config(overrides=["colorize.work_size=160", "retrieval.work_size=96"]))


def test_corrupted_index_is_rebuilt_or_refused(tmp_path, config):
    refs = make_pool(tmp_path / "refs", shapes=("ball", "box"), unnamed=False)
    out = tmp_path / "index"
    files = build_store(refs, out, config).info["files"]
    index_file = out / files["patches.faiss"]
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_file.write_bytes(bytes(data))
    strict = config.model_copy(deep=True)
    strict.retrieval.on_corrupt_index = "error"
    with pytest.raises(StoreError, match=r"patches\.\w+\.faiss: index file is corrupted"):
        ReferenceIndex.open(out, strict)
    with pytest.warns(UserWarning, match="corrupted"):
        store = ReferenceIndex.open(out, config)
    lines, page = query("box")
    assert store.search(lines, page, 1)["references"][0]["identity"] == "box"
    repaired = ReferenceIndex.open(out, strict)  # repaired on disk
    assert sorted(p.name for p in out.glob("patches.*.faiss")) == [repaired.info["files"]["patches.faiss"]]
    (out / files["embeddings.npy"]).write_bytes(b"garbage")
    with pytest.raises(StoreError, match=r"embeddings\.\w+\.npy: missing or corrupted"):
        ReferenceIndex.open(out, config)


def test_open_missing_store_is_one_clear_line(tmp_path):
    with pytest.raises(StoreError, match="not a reference index"):
        ReferenceIndex.open(tmp_path)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "pq"])
def test_approximate_store_with_restriction(tmp_path, kind):
    cfg = load_config(overrides=FAST + [f"retrieval.index={kind}", "retrieval.ivf_nlist=2"])
    refs = make_pool(tmp_path / "refs")
    store = build_store(refs, tmp_path / "index", cfg)
    assert store.index_kind == kind
    lines, page = query("roof")
    assert store.search(lines, page, 3)["references"][0]["identity"] == "roof"
    restricted = store.search(lines, page, 3, identities=["ball"])
    assert restricted["references"] and {r["identity"] for r in restricted["references"]} <= {"ball", ""}
    assert ReferenceIndex.open(tmp_path / "index").index_kind == kind


# ---------------------------------------------------------------------------- faiss
def test_index_kind_is_chosen_by_size():
    cfg = load_config(overrides=["retrieval.flat_max_vectors=1000"]).retrieval
    assert faiss_index.choose_index_kind(1000, cfg) == "flat"
    assert faiss_index.choose_index_kind(1001, cfg) == "ivf"
    cfg.approximate_index = "hnsw"
    assert faiss_index.choose_index_kind(5000, cfg) == "hnsw"
    assert faiss_index.ivf_nlist(1_000_000, cfg) == 4096  # autofaiss rule: 2**round(log2(4*sqrt(n)))


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "pq"])
def test_approximate_index_recall(kind):
    """Clustered vectors (like real embeddings): recall@10 against exact search."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64))
    data = centres[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 64))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    queries = data[:200] + 0.05 * rng.normal(size=(200, 64)).astype(np.float32)
    cfg = load_config(overrides=[f"retrieval.index={kind}", "retrieval.ivf_nprobe=16",
                                 "retrieval.pq_train_points=2000"]).retrieval
    exact = faiss_index.build_index(data, load_config(overrides=["retrieval.index=flat"]).retrieval)
    approx = faiss_index.build_index(data, cfg)
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.95, recall


def test_cpu_search_without_gpu():
    cfg = load_config().retrieval
    idx = faiss_index.build_index(np.eye(4, dtype=np.float32), cfg)
    assert faiss_index.to_search_device(idx, "auto") is idx or faiss_index.gpu_available()
    if not faiss_index.gpu_available():
        with pytest.raises(RuntimeError, match="faiss-gpu"):
            faiss_index.to_search_device(idx, True)


# ---------------------------------------------------------------------------- identities
def test_identity_votes_and_assignment():
    scores = {"a/1": 0.90, "a/2": 0.89, "b/1": 0.80, "u": 0.85}
    ident = {"a/1": "a", "a/2": "a", "b/1": "b", "u": ""}
    votes = identity_votes(scores, ident, 10, 0.02)
    assert abs(sum(votes.values()) - 1) < 1e-9 and max(votes, key=votes.get) == "a"
    assert assign_identities(votes, 0.5) == ["a"]
    assert assign_identities(votes, 0.99) == [UNKNOWN]
    assert assign_identities({"": 0.9, "a": 0.1}, 0.5) == [UNKNOWN]  # the unnamed pool is no identity
    assert assign_scene_identities([{"a": 0.6, "b": 0.4}, {"a": 0.3, "b": 0.7}, {"b": 1.0}], 0.5) == ["b"]


def test_identities_for_page():
    cfg = load_config(overrides=['retrieval.page_identities={"1-3": [alice], "7": [bob, carol]}']).retrieval
    assert identities_for_page(cfg, 2) == ["alice"]
    assert identities_for_page(cfg, 7) == ["bob", "carol"]
    assert identities_for_page(cfg, 5) is None  # auto
    cfg.identities = ["dora"]
    assert identities_for_page(cfg, 5) == ["dora"]


# ---------------------------------------------------------------------------- canvas
def test_choose_work_size_follows_aspect():
    assert choose_work_size(1000, 1000) == (640, 640)
    w, h = choose_work_size(1115, 1600)  # a manga page
    assert w % 64 == 0 and h % 64 == 0 and abs((w / h) / (1115 / 1600) - 1) < 0.1
    w, h = choose_work_size(1920, 1080)
    assert w % 64 == 0 and h % 64 == 0 and w > h


def test_canvas_layout_matches_colorflow():
    query_img = np.full((300, 200), 0, np.uint8)  # black query, any aspect
    colors = {q: [np.full((40, 30, 3), (10 * i + 1, 50 + r, 100), np.uint8) for r in range(3)]
              for i, q in enumerate(("tl", "tr", "bl", "br"))}
    canvas = build_canvas(query_img, [colors[q] for q in ("tl", "tr", "bl", "br")], size=(128, 192))
    w, h = 128, 192
    assert canvas.image.shape == (2 * h, 2 * w, 3) and canvas.mask.shape == (2 * h, 2 * w)
    assert canvas.query_box == (64, 96, 192, 288) and canvas.cell_size == (64, 96)
    assert (canvas.image[96:288, 64:192] == 0).all()  # query in the centre 2x2 cells
    assert (canvas.mask[96:288, 64:192] == 0).all() and (canvas.mask == 0).sum() == w * h
    for q, cells in CELL_TABLE.items():
        for rank, (row, col) in enumerate(cells):
            x0, y0 = col * 64, row * 96
            cell = canvas.image[y0:y0 + 96, x0:x0 + 64]
            assert (cell[1:-1, 1:-1] == colors[q][rank][0, 0]).all(), (q, rank)
            assert (cell[0] == 255).all() and (cell[:, 0] == 255).all()  # 1-px gutter
            assert (cell[-1] == 255).all() and (cell[:, -1] == 255).all()
    assert len(canvas.cells) == 12
    back = canvas.to_page(canvas.image)
    assert back.shape == (300, 200, 3) and (back == 0).all()


def test_canvas_with_missing_patches_and_store(built):
    _, _, store = built
    lines, page = query("roof")
    result = store.search(lines, page, 3)
    canvas = canvas_for_page(store, result, lines)
    assert canvas.work_size[0] % 64 == 0 and canvas.image.shape[:2] == (2 * canvas.work_size[1], 2 * canvas.work_size[0])
    assert len(canvas.cells) == 12 and all(c["reference"] for c in canvas.cells)
    json.dumps(canvas.info())
    sparse = build_canvas(lines, [[], [page], [], []])
    assert len(sparse.cells) == 1 and sparse.cells[0]["cell"] == [1, 3]


# ---------------------------------------------------------------------------- evaluation + flow
def test_retrieval_topk_accuracy_on_generated_dataset(tmp_path, config):
    for shape in ("ball", "box", "roof"):
        for v, (dx, dy, scale) in enumerate(VIEWS):
            write(tmp_path / "ds" / shape / f"v{v}_color.png", draw(shape, FILLS[v], dx, dy, scale))
            write(tmp_path / "ds" / shape / f"v{v}_line.png", draw(shape, dx=dx, dy=dy, scale=scale, colored=False))
    metrics = retrieval_topk_accuracy(tmp_path / "ds", config)
    assert set(metrics) == {"retrieval_top1", "retrieval_top3"}
    assert metrics["retrieval_top1"] == 1.0 and metrics["retrieval_top3"] == 1.0


def test_build_index_flow_function(tmp_path):
    from chromaflow.flows.build_index import build_reference_index
    from chromaflow.tasks.index import build_reference_index_task

    refs = make_pool(tmp_path / "refs", shapes=("ball",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = build_reference_index_task.fn(str(refs), str(tmp_path / "index"),
                                                load_config(overrides=FAST).model_dump(mode="json"))
    assert summary["references"] == 4 and summary["identities"] == ["(unnamed)", "ball"]
    assert callable(build_reference_index.fn)


def test_scene_shares_one_identity_assignment(built):
    _, _, store = built
    frames = [query("box", dx=d) for d in (0, 3, 6)]
    results = store.search_scene(frames, top_k=2)
    assert [r["identities"] for r in results] == [["box"]] * 3
    assert all(r["references"][0]["identity"] == "box" for r in results)
    forced = store.search_scene(frames, top_k=2, identities=["ball"])
    assert all({x["identity"] for x in r["references"]} <= {"ball", ""} for r in forced)
    # Explicit identities still report the frame's own (unrestricted) votes.
    assert max(forced[0]["identity_scores"], key=forced[0]["identity_scores"].get) == "box"


def test_canvas_sample_members(built):
    from chromaflow.storage.images import decode_png

    _, _, store = built
    lines, page = query("ball")
    members = canvas_sample(store, store.search(lines, page, 3), lines)
    canvas, mask = decode_png(members["canvas.png"]), decode_png(members["mask.png"], gray=True)
    info = json.loads(members["canvas.json"])
    assert canvas.shape[:2] == mask.shape == (2 * info["work_size"][1], 2 * info["work_size"][0])
    assert {c["reference"] for c in info["cells"]} <= set(store.references)


def test_build_index_flow_runs_in_prefect(tmp_path, prefect_harness):
    from chromaflow.flows.build_index import build_reference_index

    refs = make_pool(tmp_path / "refs", shapes=("box",), unnamed=False)
    summary = build_reference_index(str(refs), str(tmp_path / "index"), overrides=FAST)
    assert summary["references"] == 3 and summary["identities"] == ["box"]
    again = build_reference_index(str(refs), str(tmp_path / "index"), overrides=FAST)
    assert again["reused_references"] == 3 and again["fingerprint"] == summary["fingerprint"]


def test_search_batch_equals_single_searches(built):
    _, _, store = built
    pages = [query("ball"), query("roof", dx=-5), query("box", dy=-4)]
    batched = store.search_batch(pages, top_k=3)
    single = [store.search(lines, page, 3) for lines, page in pages]
    # FAISS may take another (BLAS) code path for bigger batches: same hits, scores to ~1e-5.
    for b, s in zip(batched, single):
        assert [r["name"] for r in b["references"]] == [r["name"] for r in s["references"]]
        assert b["identities"] == s["identities"]
        np.testing.assert_allclose([r["score"] for r in b["references"]], [r["score"] for r in s["references"]],
                                   atol=1e-5)


def test_page_like_only_the_unnamed_pool_is_unknown(built):
    _, _, store = built
    page = np.full((SIZE, SIZE, 3), 255, np.uint8)
    for x in range(12, SIZE, 30):
        cv2.line(page, (x, 0), (x, SIZE), (0, 0, 0), 3)
    result = store.search(extract_lines(page).lines, page, 3)
    assert result["references"][0]["name"] == "stripes.png"
    assert result["identities"] == [UNKNOWN]
    assert max(result["identity_scores"], key=result["identity_scores"].get) == ""


def test_bad_page_range_is_a_clear_error():
    cfg = load_config(overrides=['retrieval.page_identities={"5-2": [alice]}']).retrieval
    with pytest.raises(ValueError, match="'5-2'"):
        identities_for_page(cfg, 3)


def test_failed_rebuild_leaves_previous_store_intact(tmp_path, config):
    refs = make_pool(tmp_path / "refs", shapes=("ball", "box"), unnamed=False)
    first = build_store(refs, tmp_path / "index", config)
    write(refs / "roof" / "v0.png", draw("roof"))
    # Fails after the new table and embeddings are written, before store.json switches.
    broken = load_config(overrides=FAST + ["retrieval.index=pq", "retrieval.pq_m=7"])
    with pytest.raises(ValueError, match="pq_m=7"):
        build_store(refs, tmp_path / "index", broken)
    reopened = ReferenceIndex.open(tmp_path / "index")
    assert reopened.fingerprint == first.fingerprint and "roof/v0.png" not in reopened.references
    lines, page = query("box")
    assert reopened.search(lines, page, 1)["references"][0]["identity"] == "box"
