"""Where the features of issues 12-16 meet: held frames x instances (retrieval), the export
fingerprint x the episode's export settings, the job lock x the inbox's subflows, and the
`weights` deployment parameter (a trained checkpoint) x the config."""

from __future__ import annotations

import json

import pytest

from chromaflow.conf import load_config
from chromaflow.flows.colorize import colorize_chapter, colorize_episode, with_weights
from chromaflow.flows.inbox import colorize_inbox
from chromaflow.stages import export
from chromaflow.storage.job import job_lock
from chromaflow.storage.shards import read_shard
from synthetic import make_chapter
import test_episodes
from test_episodes import drawing, run_job, write_clip


@pytest.fixture
def episode_on_twos(tmp_path, refs_dir, monkeypatch):
    """8 frames, each drawing held 2 frames, run through every stage (instances included);
    frames large enough for the silhouette segmenter to find the character."""
    monkeypatch.setattr(test_episodes, "SIZE", (224, 320))
    video = write_clip(tmp_path / "ep.mp4", [drawing(i // 2) for i in range(8)], list(range(8)), audio_seconds=0.5)
    job, _, colorizer, exported = run_job(tmp_path, video, refs_dir,
                                          ["job.shard_size=4", "colorize.work_size=320", "lines.work_size=320"])
    return job, colorizer, exported


def test_held_frames_take_their_drawings_retrieval_and_instances(episode_on_twos):
    job, colorizer, _ = episode_on_twos
    colored = {s["__key__"]: json.loads(s["json"]) for k in range(2) for s in read_shard(job.shard_path("colorize", k))}
    assert [colored[f"f{i:06d}"].get("reused_from") for i in range(8)] == [
        None if i % 2 == 0 else f"f{i - 1:06d}" for i in range(8)]
    found = {s["__key__"]: json.loads(s["json"]) for k in range(2) for s in read_shard(job.shard_path("retrieve", k))}
    assert all(result["instances"] for result in found.values())  # the character is an instance on every frame
    for i in range(1, 8, 2):  # the repeat carries the very result (panels, instances) of its drawing
        assert found[f"f{i:06d}"] == found[f"f{i - 1:06d}"]


def test_episode_export_is_rebuilt_when_its_export_settings_change(episode_on_twos):
    job, _, _ = episode_on_twos
    video = job.root / "episode.mp4"
    first, first_mtime = video.read_bytes(), video.stat().st_mtime_ns
    assert job.read_info()["episode_video"]["crf"] == 18
    export.run(job, [])  # same shards, same settings: nothing rebuilt
    assert video.stat().st_mtime_ns == first_mtime and export.export_problems(job) == []

    info = job.read_info()  # what a `chromaflow colorize ... --set export.video_crf=40` writes
    info["config"]["export"]["video_crf"] = 40
    job.write_info(info)
    assert any("episode.mp4" in line for line in export.export_problems(job))  # `status` calls it stale
    export.run(job, [])  # a rerun that recomputed nothing still rebuilds it
    assert job.read_info()["episode_video"]["crf"] == 40
    assert video.read_bytes() != first and export.export_problems(job) == []


def test_inbox_leaves_a_chapter_that_another_run_holds_for_the_next_pass(tmp_path, refs_dir, prefect_harness):
    inbox, out_root = tmp_path / "inbox", tmp_path / "jobs"
    make_chapter(inbox / "ch1", 1)
    with job_lock(out_root / "ch1"):  # e.g. a `chromaflow colorize inbox/ch1 --out jobs/ch1` running
        state = colorize_inbox(str(inbox), str(refs_dir), str(out_root), return_state=True)
    assert state.is_completed(), state.message
    assert state.message == "0 colorized, 0 finished earlier, 1 busy in another run (ch1)"
    assert [p.name for p in (out_root / "ch1").iterdir()] == [".lock"]  # nothing written into the held job


def test_weights_parameter_points_the_diffusion_backend_at_the_checkpoint(tmp_path):
    step = tmp_path / "run" / "checkpoints" / "step-000010"
    config = load_config(None, with_weights(["job.shard_size=8"], str(step)))
    assert config.colorize.weights == str(step) and config.colorize.diffusion.colorflow_path == str(step)
    assert config.job.shard_size == 8
    assert with_weights(None, None) == []
    for flow_obj in (colorize_chapter, colorize_episode, colorize_inbox):  # the deployment form shows it
        schema = flow_obj.parameters.model_dump()["properties"]["weights"]
        assert "checkpoint" in schema["description"]
