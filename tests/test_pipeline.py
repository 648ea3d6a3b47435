"""The colorize DAG end to end, with a real Prefect API, a real local Ray cluster, real
WebDataset shards and parquet manifests."""

from __future__ import annotations

import json
import os
import sys
import zipfile

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from chromaflow.conf import load_config
from chromaflow.flows.colorize import colorize_chapter, colorize_episode, rerun_failed_shards
from chromaflow.flows.job_state import job_id
from chromaflow.flows.summary import JobIncomplete
from chromaflow.stages.pool import ShardFailed, StagePool
from chromaflow.stages.registry import SHARD_SETS as STAGES
from chromaflow.stages.registry import SHARD_STAGES
from chromaflow.storage.job import JobDir
from chromaflow.storage.manifest import read_manifest
from chromaflow.storage.shards import read_failure, read_shard, read_stats
from chromaflow.models.palette_memory import PaletteMemory
from synthetic import PALETTES, make_video

N = len(SHARD_STAGES)  # shard stages per shard

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


def task_runs(state) -> dict:
    """{task run name: task run} of the flow run that ended in `state` (the session's API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[
            state.state_details.flow_run_id])))
    return {run.name: run for run in runs}


def run_logs(state) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs go to the API in batches: send what is queued first
    with get_client(sync_client=True) as client:
        return client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))


def run_name(state) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def test_chapter_end_to_end_then_cached_rerun(prefect_harness, ray_cluster, tmp_path, chapter_dir, refs_dir):
    out = tmp_path / "job"
    sources = {p.name: p.read_bytes() for p in chapter_dir.iterdir()}
    # One lines/retrieve task at a time makes the order of the chained shard stages fixed.
    state = colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out),
                             overrides=["job.shard_size=2", "prefect.max_parallel_tasks=1"], return_state=True)
    summary = state.result()
    assert state.is_completed() and state.message == f"chapter: 5/5 pages written ({3 * N} shard-stages computed, 0 reused)"
    assert summary["num_items"] == 5 and summary["num_shards"] == 3
    assert summary["computed"] == 3 * N and summary["cached"] == 0
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

    # What the Prefect UI shows: the run and its tasks named from the job, its stages chained
    # per shard, and artifacts keyed by the job (chapter name + job id).
    key = f"chapter-{job_id(out)}"
    assert run_name(state) == key
    tasks = task_runs(state)
    assert set(tasks) == {"ingest", "references", "palette_memory", "export"} | {
        f"{stage}-{shard:06d}" for stage in SHARD_STAGES for shard in range(3)}
    # shard 0 reached colorize before the last shard's line extraction had even started
    assert tasks["colorize-000000"].start_time < tasks["lines-000002"].start_time
    from prefect.artifacts import Artifact

    shards_table = Artifact.get(f"{key}-shards")
    assert shards_table is not None and '"upscale": "ok"' in shards_table.data
    assert Artifact.get(f"{key}-before-after").data.count("data:image/jpeg;base64,") == 5  # every page
    assert '"problem": "none"' in Artifact.get(f"{key}-problems").data
    assert str(out / "report.html") in Artifact.get(f"{key}-report").data
    # the identities table: a row per page, what its colorize sample recorded, and each page colored
    # from the pool of the identity it names (alice and bob differ only in color: their line art
    # is the same drawing, so which of them a page is taken for is not checked here)
    identities = json.loads(Artifact.get(f"{key}-identities").data)
    recorded = {}
    for shard in range(3):
        for sample in read_shard(job.shard_path("colorize", shard)):
            meta = json.loads(sample["json"])
            recorded[int(sample["__key__"][1:]) + 1] = (", ".join(meta["identities"]), ", ".join(meta["references"]))
    assert [(r["page"], r["source"]) for r in identities] == [(i, f"page{i}.png") for i in range(1, 6)]
    for row in identities:
        assert (row["identities"], row["references"]) == recorded[row["page"]], row
        assert row["identities"] in ("alice", "bob"), row
        refs = row["references"].split(", ")
        assert refs and all(ref.startswith(f"{row['identities']}/") for ref in refs), row

    # The first re-run of the finished job does no work, rewrites nothing, and Prefect shows
    # every shard stage as Cached; its log says what it redoes: nothing.
    before = mtimes(job)
    again_state = rerun_failed_shards(out=str(out), return_state=True)
    again = again_state.result()
    assert again["computed"] == 0 and again["cached"] == 3 * N
    assert mtimes(job) == before
    rerun_tasks = task_runs(again_state)
    assert {name: run.state.name for name, run in rerun_tasks.items() if name[-6:].isdigit()} == {
        f"{stage}-{shard:06d}": "Cached" for stage in SHARD_STAGES for shard in range(3)}
    assert run_name(again_state) == f"rerun-{key}"
    assert any("redoing up to 0 (shard, stage) pairs" in log.message and f"reusing {3 * len(STAGES)}" in log.message
               for log in run_logs(again_state))

    # A config change that only touches upscaling recomputes only the final stage.
    third = colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out),
                             overrides=["job.shard_size=2", "upscale.radius=5"])
    assert third["computed"] == 3 and third["cached"] == 3 * (N - 1)

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
    assert fourth["computed"] == 3 * 2 and fourth["cached"] == 3 * (N - 2)
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
    # page2 (p000001) decodes, but the colorizer raises on it.
    state = colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out), return_state=True,
                             overrides=["colorize.backend=faulty_backend:FailOnPage"])
    assert state.is_failed()
    assert "\n" not in state.message and state.message.startswith("chapter: 2/5 pages written; 3 problem(s): ")
    with pytest.raises(JobIncomplete) as info:  # what a Python caller gets
        state.result()
    message = str(info.value)
    assert "page3.png: empty file" in message and "page4.png: corrupt or truncated" in message
    assert "colorize page2.png: ValueError: cannot color this page" in message
    assert sorted(p.name for p in (out / "pages").glob("*.png")) == ["0001_page1.png", "0005_page5.png"]
    rows = read_manifest(JobDir.open(out))
    frames = next(r for r in rows if r["stage"] == "ingest")
    assert frames["status"] == "partial" and frames["pages_failed"] == 2 and "page3.png" in frames["error"]
    # The UI: tasks that skipped pages are Completed with a message, each bad page is named in
    # the run's log once, the problems artifact lists them, and no log holds a traceback.
    tasks = task_runs(state)
    assert tasks["ingest"].state.type.value == "COMPLETED"
    assert tasks["ingest"].state.message == "2 page(s) skipped: page3.png, page4.png"
    assert tasks["colorize-000000"].state.message == "1 page(s) skipped: page2.png"
    logs = [log.message for log in run_logs(state)]
    for page in ("page3.png", "page4.png", "page2.png"):  # (the final states' messages name them too)
        assert len([m for m in logs if page in m and not m.startswith("Finished in state")]) == 1, (page, logs)
    assert not [m for m in logs if "Traceback" in m]
    from prefect.artifacts import Artifact

    problems = Artifact.get(f"chapter-{job_id(out)}-problems").data
    assert "page3.png" in problems and "page4.png" in problems and "cannot color this page" in problems


def test_missing_refs_folder_fails_before_work(prefect_harness, tmp_path, chapter_dir):
    state = colorize_chapter(source=str(chapter_dir), refs=str(tmp_path / "nope"), out=str(tmp_path / "job"),
                             return_state=True)
    assert state.is_failed() and state.message == f"{tmp_path / 'nope'}: reference folder does not exist"
    assert not [log.message for log in run_logs(state) if "Traceback" in log.message]
    with pytest.raises(ValueError, match=r"nope: reference folder does not exist"):
        state.result()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty: reference folder holds no images"):
        colorize_chapter(source=str(chapter_dir), refs=str(empty), out=str(tmp_path / "job"))
    assert not (tmp_path / "job").exists()


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
    # every frame came out colored (the source is black line art: no chroma at all)
    for source, colored in zip(_frames(video), _frames(out / "episode.mp4")):
        assert colored_share(colored, source) > 0.1 and colored_share(source, source) < 0.01


def _frames(path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            cap.release()
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


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
    rerun = rerun_failed_shards(out=str(out), return_state=True)
    done = rerun.result()
    assert done["computed"] == 2 + 2 * 2  # color+final of shard 1, plus color+final of 0 and 2 (backend changed)
    # its log counted exactly that beforehand
    assert any("redoing up to 6 (shard, stage) pairs (1 failed, 1 missing, 2 stale for the current inputs or config"
               f", 2 after those), reusing {3 * len(STAGES) - 6}" in log.message for log in run_logs(rerun))
    assert len(list((out / "pages").glob("*.png"))) == 5


def test_pool_retries_a_crashed_actor_on_another(ray_cluster, tmp_path, chapter_dir, refs_dir):
    """A worker that dies once: the shard runs again on a replacement actor and succeeds."""
    import ray.cloudpickle

    from chromaflow.stages import ingest, instances, lines, retrieve
    from chromaflow.stages.workers import PooledStages

    config = load_config(overrides=["job.shard_size=8", "ray.num_actors=1", "ray.max_shard_attempts=2"])
    job = JobDir(tmp_path / "job", "ch")
    job.root.mkdir()
    job.write_info({"name": "ch", "kind": "chapter", "source": "", "refs": "", "config": {}, "num_shards": 1})
    ingest.run(job, chapter_dir, config)
    lines.run(job, 0, config)
    instances.run(job, 0, config)
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
