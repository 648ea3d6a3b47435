"""A chapter job with `colorize.backend: diffusion` on tiny random weights (written in the
release + SD1.5 layouts), through the real Prefect flow and a real Ray actor.

Checked: every page comes back at its own size and colored; the same seed gives the same
bytes in this process as in the job's Ray actor, another seed other pages (and only
colorize + upscale rerun); and the per-quadrant patches the retrieval stage found are what the job's canvases
held: the color shard's page is reproduced in this process from the retrieval shard's hits
(patches loaded from the job's reference store, canvas built and recorded here, each hit in
ColorFlow's cell for its quadrant and rank), while the same patches in other cells give
another page.

Shards are read from the tars by what they hold (a retrieval sample has `quadrants`, a
color sample names its backend), not by folder name."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chromaflow.conf import load_config  # noqa: E402
from chromaflow.flows.colorize import colorize_chapter  # noqa: E402
from chromaflow.models.colorflow.canvas import CELL_TABLE, QUADRANTS  # noqa: E402
from chromaflow.models.colorflow.tiny import write_tiny_release  # noqa: E402
from chromaflow.models.colorizers import ColorizeRequest, build_colorizer  # noqa: E402
from chromaflow.retrieval.images import ReferenceImages  # noqa: E402
from chromaflow.stages.registry import SHARD_STAGES  # noqa: E402
from synthetic import make_chapter, make_refs  # noqa: E402

WORK_SIZE = 256


def _overrides(colorflow: Path, sd15: Path, seed: int = 0) -> list[str]:
    return [
        "job.shard_size=2",
        "ray.num_actors=1",
        "ray.num_cpus_per_actor=1",
        f"colorize.work_size={WORK_SIZE}",
        "colorize.backend=diffusion",
        "instances.backend=none",  # the panel's own quadrant hits (per-identity quadrants: tests/test_instances.py)
        f"colorize.diffusion.colorflow_path={colorflow}",
        f"colorize.diffusion.sd15_path={sd15}",
        "colorize.diffusion.resolution=64x64",
        "colorize.diffusion.steps=2",
        "colorize.diffusion.device=cpu",
        f"colorize.diffusion.seed={seed}",
    ]


def _samples(out: Path) -> list[dict[str, bytes]]:
    """Every sample of every shard tar under the job, as {"__key__", ext: bytes}."""
    samples = []
    for path in sorted(out.glob("*/*.tar")):
        by_key: dict[str, dict] = {}
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                by_key.setdefault(key, {"__key__": key})[ext] = tar.extractfile(member).read()
        samples += list(by_key.values())
    return samples


def _decode(data: bytes, flags=cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def _job_shards(out: Path, key: str) -> dict[str, dict]:
    """The page's frame, line-art, retrieval and color samples."""
    found = {}
    for sample in _samples(out):
        if sample["__key__"] != key or "json" not in sample:
            continue
        meta = json.loads(sample["json"])
        if "panels" in meta and "backend" not in meta:
            found["retrieval"] = meta
        elif meta.get("backend") == "diffusion" and "index" not in meta:  # upscale adds the frame's meta
            found["color"] = _decode(sample["png"])
        elif set(meta) == {"kind"}:
            found["lines"] = (_decode(sample["png"], cv2.IMREAD_GRAYSCALE), meta["kind"])
        elif "png" in sample and "index" in meta and "backend" not in meta:  # not upscale's
            found["frame"] = _decode(sample["png"])
    assert set(found) == {"frame", "lines", "retrieval", "color"}, sorted(found)
    return found


def _pages(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "pages").glob("*.png"))}


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("job_release"))


def test_chapter_job_with_the_diffusion_backend(prefect_harness, ray_cluster, tmp_path, tiny_release):
    chapter, refs, out = make_chapter(tmp_path / "chapter", num_pages=2), make_refs(tmp_path / "refs"), tmp_path / "job"
    summary = colorize_chapter(source=str(chapter), refs=str(refs), out=str(out), overrides=_overrides(*tiny_release))
    assert summary["num_items"] == 2 and summary["num_shards"] == 1
    first = _pages(out)
    assert len(first) == 2
    for name, data in first.items():
        page = _decode(data)
        original = _decode((chapter / name.split("_", 1)[1]).read_bytes())
        assert page.shape == original.shape, name  # the page's own size, not the model's 64x64
        chroma = np.hypot(*(cv2.cvtColor(page, cv2.COLOR_RGB2LAB).astype(float)[..., 1:] - 128).transpose(2, 0, 1))
        assert chroma.mean() > 3, f"{name} came back gray"

    # the same seed in this process (another process than the Ray actor) gives the job's page,
    # from the retrieved patches
    _check_retrieved_patches_reach_the_canvas(out, tiny_release)
    # another seed recolors: only colorize and upscale rerun
    other = colorize_chapter(source=str(chapter), refs=str(refs), out=str(out),
                             overrides=_overrides(*tiny_release, seed=1))
    assert other["computed"] == 2 and other["cached"] == len(SHARD_STAGES) - 2  # lines, instances, retrieve
    assert all(_pages(out)[n] != first[n] for n in first)


def _check_retrieved_patches_reach_the_canvas(out: Path, tiny_release) -> None:
    config = load_config(overrides=_overrides(*tiny_release))
    colorizer = build_colorizer(config)
    store = ReferenceImages.open(out / "references")
    shards = _job_shards(out, "p000000")
    panels = shards["retrieval"]["panels"]
    assert len(panels) == 1, "the synthetic pages are one panel each"
    panel = panels[0]
    x0, y0, x1, y1 = panel["box"]
    page = shards["frame"]
    scale = WORK_SIZE / max(page.shape[:2])
    page = cv2.resize(page, (round(page.shape[1] * scale), round(page.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    lines, kind = shards["lines"]
    hits = panel["quadrants"]
    assert len(hits) == 4 and all(len(q) == 3 for q in hits)
    patches = [[store.load_patch(h["name"], h["box"]) for h in quadrant] for quadrant in hits]
    references = [store.load_reference(r["name"]) for r in panel["references"]]

    def request(quadrant_patches):
        return ColorizeRequest(key="p000000", page=page[y0:y1, x0:x1], lines=lines[y0:y1, x0:x1], kind=kind,
                               references=references, quadrant_patches=quadrant_patches)

    canvases = []
    colorize_canvases = colorizer.pipeline.colorize_canvases
    colorizer.pipeline.colorize_canvases = lambda c, *a, **k: canvases.append(c[0]) or colorize_canvases(c, *a, **k)
    try:
        color = colorizer.colorize(request(patches))
        swapped = colorizer.colorize(request([quadrant[::-1] for quadrant in patches]))  # ranks in the wrong cells
    finally:
        colorizer.pipeline.colorize_canvases = colorize_canvases
    job_color = shards["color"][y0:y1, x0:x1]
    # the job's page, reproduced here (the Ray actor runs torch on 1 thread, this process on
    # more: float sums in another order move ~0.1% of the values by one grey level) ...
    diff = np.abs(color.astype(int) - job_color.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # ... and not from the same patches in other cells (~17% of the values differ, up to 7 levels:
    # tiny random weights make the border matter little, hence the cell check below)
    assert (np.abs(swapped.astype(int) - job_color.astype(int)) > 0).mean() > 0.05

    # the canvas this page was colorized from holds each quadrant's hits in ColorFlow's cells
    canvas, cell_w, cell_h = canvases[0], 32, 32  # 64x64 query: 128x128 canvas, 32-px cells
    for quadrant, quadrant_patches in zip(QUADRANTS, patches):
        for (row, col), patch in zip(CELL_TABLE[quadrant], quadrant_patches):
            cell = canvas[row * cell_h + 1:(row + 1) * cell_h - 1, col * cell_w + 1:(col + 1) * cell_w - 1]
            expected = cv2.resize(patch, (cell_w - 2, cell_h - 2), interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(cell, expected)
