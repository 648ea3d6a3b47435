"""What the inbox flow decides before it runs anything: which entries are chapters or
episodes, which jobs are finished, and which pages the before/after artifact shows."""

from __future__ import annotations

import json
import os
import zipfile

from chromaflow.conf import load_config
from chromaflow.flows.artifacts import selected_pages
from chromaflow.flows.inbox import scan_inbox
from chromaflow.flows.job_state import FINISHED, INCOMPLETE, NEW, job_id, job_state, mark_finished
from chromaflow.storage.job import JobDir
from synthetic import make_chapter


def test_scan_inbox_finds_chapters_and_episodes_in_natural_order(tmp_path):
    inbox = tmp_path / "inbox"
    make_chapter(inbox / "ch10", 1)
    make_chapter(inbox / "ch2", 1)
    with zipfile.ZipFile(inbox / "ch3.cbz", "w") as cbz:
        cbz.writestr("p1.png", b"")
    (inbox / "ep 1.mp4").write_bytes(b"")
    (inbox / "notes.txt").write_text("x")
    (inbox / "cover.png").write_bytes(b"")
    (inbox / ".partial").mkdir()
    (inbox / "ch2.zip").write_bytes(b"")  # would share OUT_ROOT/ch2/ with the folder
    entries, ignored = scan_inbox(inbox)
    assert [(e.name, e.path.name, e.kind) for e in entries] == [
        ("ch2", "ch2", "chapter"), ("ch3", "ch3.cbz", "chapter"), ("ch10", "ch10", "chapter"),
        ("ep-1", "ep 1.mp4", "episode")]
    assert sorted(line.split(": ", 1)[0].rsplit("/", 1)[1] for line in ignored) == ["ch2.zip", "cover.png",
                                                                                   "notes.txt"]
    assert any("ch2.zip: its job folder ch2/ is taken by ch2" in line for line in ignored)


def test_job_state_follows_the_source_and_the_output_shaping_config(tmp_path):
    chapter = make_chapter(tmp_path / "ch1", 2)
    root = tmp_path / "jobs" / "ch1"
    config = load_config(overrides=["job.name=ch1"])
    assert job_state(root, chapter, config) == (NEW, "no job yet")
    root.mkdir(parents=True)
    job = JobDir(root, "ch1")
    job.write_info({"name": "ch1"})
    assert job_state(root, chapter, config) == (INCOMPLETE, "never finished")
    mark_finished(job, chapter, config, failed_shards=0, problems=1)
    assert job_state(root, chapter, config) == (FINISHED, "finished (1 problem(s))")
    # how the run is executed does not matter; what shapes the pages does
    assert job_state(root, chapter, load_config(overrides=["job.name=ch1", "ray.num_actors=5"]))[0] == FINISHED
    assert job_state(root, chapter, load_config(overrides=["job.name=ch1", "upscale.radius=5"])) == (
        INCOMPLETE, "config changed")
    page = chapter / "page2.png"
    os.utime(page, ns=(page.stat().st_atime_ns, page.stat().st_mtime_ns + 1_000_000))
    assert job_state(root, chapter, config) == (INCOMPLETE, "source changed")
    mark_finished(job, chapter, config, failed_shards=2, problems=2)
    assert job_state(root, chapter, config) == (INCOMPLETE, "2 shard(s) failed")
    assert json.loads((root / "job.json").read_text())["name"] == "ch1"  # the rest of job.json is kept


def test_job_id_tells_apart_folders_that_share_a_name(tmp_path):
    a, b = tmp_path / "a" / "chapter", tmp_path / "b" / "chapter"
    assert job_id(a) != job_id(b) and job_id(a) == job_id(tmp_path / "a" / ".." / "a" / "chapter")
    assert len(job_id(a)) == 8 and int(job_id(a), 16) >= 0


def test_before_after_selection_is_every_page_or_evenly_spaced():
    pages = [{"index": i} for i in range(10)]
    assert selected_pages(pages, 10) == pages and selected_pages(pages, 64) == pages
    assert [p["index"] for p in selected_pages(pages, 4)] == [0, 3, 6, 9]
    assert [p["index"] for p in selected_pages(pages, 1)] == [0]
