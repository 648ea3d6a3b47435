"""The colorize DAG end to end, with a real Prefect API, a real local Ray cluster, real
WebDataset shards and parquet manifests."""

from __future__ import annotations

import os
import sys
import zipfile

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from chromaflow.conf import load_config
from chromaflow.flows.colorize import colorize_chapter, colorize_episode, rerun_failed_shards
from chromaflow.flows.summary import JobIncomplete
from chromaflow.stages.pool import ShardFailed, StagePool
from chromaflow.stages.registry import SHARD_SETS as STAGES
from chromaflow.storage.job import JobDir
from chromaflow.storage.manifest import read_manifest
from chromaflow.storage.shards import read_failure, read_stats
from chromaflow.models.palette_memory import PaletteMemory
from synthetic import PALETTES, make_video

def colored_share(page: np.ndarray, line_art: np.ndarray) -> float:
    """Share of the line art's paper pixels that came out clearly colored (LAB chroma > 15):
    0 for an uncolored page; the synthetic character covers about a third of the page."""
    lab = cv2.cvtColor(page, cv2.COLOR_RGB2LAB).astype(np.float32)
    chroma = np.hypot(lab[..., 1] - 128, lab[..., 2] - 128)
    paper = cv2.cvtColor(line_art, cv2.COLOR_RGB2GRAY) > 200
    return float((chroma[paper] > 15).mean())


def mtimes(job: JobDir) -> dict[str, int]:
    return {str(p.relative_to(job.root)): p.stat().st_mtime_ns
            for stage in STAGES for p in job.stage_dir(stage).glob("*") if p.is_file()}


def test_chapter_end_to_end_then_cached_rerun(prefect_harness, ray_cluster, tmp_path, chapter_dir, refs_dir):
    out = tmp_path / "job"
    sources = {p.name: p.read_bytes() for p in chapter_dir.iterdir()}
    summary = colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out),
                               overrides=["job.shard_size=2"])
    assert summary["num_items"] == 5 and summary["num_shards"] == 3
    assert summary["computed"] == 3 * 4 and summary["cached"] == 0
    job = JobDir.open(out)
    pages = sorted((out / "pages").glob("*.png"))
    assert [p.name for p in pages] == [f"{i:04d}_page{i}.png" for i in range(1, 6)]
    for i, page in enumerate(pages, start=1):
        colored = cv2.cvtColor(cv2.imread(str(page)), cv2.COLOR_BGR2RGB)
        original = cv2.cvtColor(cv2.imread(str(chapter_dir / f"page{i}.png")), cv2.COLOR_BGR2RGB)
        assert colored.shape == original.shape
        assert colored_share(colored, original) > 0.1, f"{page.name} is not colored"
        # the strokes survive colorization and upscaling
        ink = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY) < 60
        assert cv2.cvtColor(colored, cv2.COLOR_RGB2GRAY)[ink].mean() < 90
    with zipfile.ZipFile(out / "chapter.cbz") as cbz:
        assert cbz.namelist() == [p.name for p in pages]
    html = (out / "report.html").read_text()
    assert "data:image/jpeg;base64," in html and "page3.png" in html
    assert "<h2>Palette memory</h2>" in html and "background:#c8283c" in html  # alice's jacket (200, 40, 60)
    table = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(table) == 3 * len(STAGES) and {r["status"] for r in table} == {"ok"}
    assert {p.name: p.read_bytes() for p in chapter_dir.iterdir()} == sources  # inputs untouched
    # what the Prefect UI shows: per-shard table, identities, before/after images, progress
    from prefect.artifacts import Artifact

    shards_table = Artifact.get("chapter-shards")
    assert shards_table is not None and '"upscale": "ok"' in shards_table.data
    before_after = Artifact.get("chapter-before-after")
    assert before_after.data.count("data:image/jpeg;base64,") == 4
    assert Artifact.get("chapter-identities") is not None

    # An unchanged re-run does no work and rewrites nothing.
    before = mtimes(job)
    again = colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out),
                             overrides=["job.shard_size=2"])
    assert again["computed"] == 0 and again["cached"] == 3 * 4
    assert mtimes(job) == before

    # A config change that only touches upscaling recomputes only the final stage.
    third = colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out),
                             overrides=["job.shard_size=2", "upscale.radius=5"])
    assert third["computed"] == 3 and third["cached"] == 3 * 3

    # Palette memory: each identity's colors were remembered before colorizing ...
    memory = PaletteMemory.load(job.palette_memory)
    assert memory.identities == ["alice", "bob"]
    assert {tuple(int(v) for v in c) for c in memory.colors(["alice"])} == set(PALETTES["alice"].values())
    # ... and a seed from an earlier chapter (alice's jacket a shade off) recolors every
    # page with the series' color: colorize and upscale rerun, lines and retrieval do not.
    series_red = (204, 44, 58)
    seed = PaletteMemory()
    seed.observe("alice", series_red, 1.0, 8.0)
    seed.save(tmp_path / "series.json")
    fourth = colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out),
                              overrides=["job.shard_size=2", "upscale.radius=5",
                                         f"colorize.palette_memory_seed={tmp_path / 'series.json'}"])
    assert fourth["computed"] == 3 * 2 and fourth["cached"] == 3 * 2
    for i in (1, 3, 5):  # alice's pages
        colored = cv2.cvtColor(cv2.imread(str(out / "pages" / f"{i:04d}_page{i}.png")), cv2.COLOR_BGR2RGB)
        body = np.all(np.abs(colored.astype(int) - series_red) <= 2, axis=2).mean()
        old = np.all(colored == PALETTES["alice"]["body"], axis=2).mean()
        assert body > 0.05 and old == 0, (i, body, old)


def test_bad_pages_are_reported_and_the_rest_completes(prefect_harness, ray_cluster, tmp_path, chapter_dir, refs_dir):
    (chapter_dir / "page3.png").write_bytes(b"")
    good = (chapter_dir / "page1.png").read_bytes()
    (chapter_dir / "page4.png").write_bytes(good[: len(good) // 3])
    out = tmp_path / "job"
    with pytest.raises(JobIncomplete) as info:
        colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out))
    message = str(info.value)
    assert "page3.png: empty file" in message and "page4.png: corrupt or truncated" in message
    assert sorted(p.name for p in (out / "pages").glob("*.png")) == ["0001_page1.png", "0002_page2.png",
                                                                      "0005_page5.png"]
    rows = read_manifest(JobDir.open(out))
    frames = next(r for r in rows if r["stage"] == "ingest")
    assert frames["status"] == "partial" and frames["pages_failed"] == 2 and "page3.png" in frames["error"]


def test_missing_refs_folder_fails_before_work(prefect_harness, tmp_path, chapter_dir):
    with pytest.raises(ValueError, match=r"nope: reference folder does not exist"):
        colorize_chapter(source=str(chapter_dir), refs=str(tmp_path / "nope"), out=str(tmp_path / "job"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty: reference folder holds no images"):
        colorize_chapter(source=str(chapter_dir), refs=str(empty), out=str(tmp_path / "job"))
    assert not (tmp_path / "job" / "ingest").exists()


def test_episode_to_video(prefect_harness, ray_cluster, tmp_path, refs_dir):
    video = make_video(tmp_path / "ep01.mp4", num_frames=9, size=(160, 224))
    out = tmp_path / "job"
    summary = colorize_episode(source=str(video), refs=str(refs_dir), out=str(out),
                               overrides=["job.shard_size=4", "ingest.video_stride=1"])
    assert summary["num_items"] == 9 and summary["num_shards"] == 3
    cap = cv2.VideoCapture(str(out / "episode.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 9
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (160, 224)
    assert abs(cap.get(cv2.CAP_PROP_FPS) - 12.0) < 0.01
    cap.release()


def test_shard_that_keeps_crashing_is_marked_failed_and_others_finish(prefect_harness, ray_cluster, tmp_path,
                                                                        chapter_dir, refs_dir):
    out = tmp_path / "job"
    # CrashOnPage kills its worker on page p000002, which lives in shard 1.
    with pytest.raises(JobIncomplete, match=r"shard 000001 failed at colorize: .*worker crashed"):
        colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out),
                         overrides=["job.shard_size=2", "colorize.backend=faulty_backend:CrashOnPage",
                                    "ray.max_shard_attempts=2"])
    job = JobDir.open(out)
    failure = read_failure(job, "colorize", 1)
    assert failure["attempts"] == 2 and "crashed" in failure["error"]
    assert read_stats(job, "colorize", 0) and read_stats(job, "colorize", 2)
    assert sorted(p.name for p in (out / "pages").glob("*.png")) == ["0001_page1.png", "0002_page2.png",
                                                                      "0005_page5.png"]
    rows = {(r["shard"], r["stage"]): r for r in read_manifest(job)}
    assert rows[(1, "colorize")]["status"] == "failed" and rows[(1, "upscale")]["status"] == "missing"

    # The crash is fixed (the default colorizer): the rerun flow redoes only shard 1 downstream.
    info = job.read_info()
    info["config"]["colorize"]["backend"] = "faulty_backend:SlowColorizer"
    job.write_info(info)
    done = rerun_failed_shards(out=str(out))
    assert done["computed"] == 2 + 2 * 2  # color+final of shard 1, plus color+final of 0 and 2 (backend changed)
    assert len(list((out / "pages").glob("*.png"))) == 5


def test_pool_retries_a_crashed_actor_on_another(ray_cluster, tmp_path, chapter_dir, refs_dir):
    """A worker that dies once: the shard runs again on a replacement actor and succeeds."""
    import ray.cloudpickle

    from chromaflow.stages import ingest, lines, retrieve
    from chromaflow.stages.workers import PooledStages

    config = load_config(overrides=["job.shard_size=8", "ray.num_actors=1", "ray.max_shard_attempts=2"])
    job = JobDir(tmp_path / "job", "ch")
    job.root.mkdir()
    job.write_info({"name": "ch", "kind": "chapter", "source": "", "refs": "", "config": {}, "num_shards": 1})
    ingest.run(job, chapter_dir, config)
    lines.run(job, 0, config)
    marker = tmp_path / "crashed-once"

    class CrashOnceRunner(PooledStages):
        def run(self, stage, job, shard):
            if not marker.exists():
                marker.write_text("x")
                os._exit(1)
            return super().run(stage, job, shard)

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    pool = StagePool(config, factory=CrashOnceRunner)
    try:
        first_pid = ray_cluster.get(pool.actors[0].pid.remote())
        # 'final' needs a color shard: fake none; run the lines-independent upscale on real inputs
        from chromaflow.retrieval.build import build_store

        build_store(refs_dir, job.references, config)
        retrieve.run(job, 0, config)
        result = pool.run("colorize", job, 0)
        assert result["status"] == "ok" and result["count"] == 5
        assert ray_cluster.get(pool.actors[0].pid.remote()) != first_pid
        assert read_stats(job, "colorize", 0)["attempts"] == 2
        assert read_failure(job, "colorize", 0) is None

        class AlwaysFails(PooledStages):
            def run(self, stage, job, shard):
                raise RuntimeError("model exploded")

        broken = StagePool(config, factory=AlwaysFails)
        try:
            with pytest.raises(ShardFailed, match="failed 2 times: RuntimeError: model exploded"):
                broken.run("upscale", job, 0)
            assert read_failure(job, "upscale", 0)["attempts"] == 2
        finally:
            broken.close()
    finally:
        pool.close()
