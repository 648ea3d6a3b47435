"""Crash consistency: what a failing or killed write leaves behind, and what a resumed run
redoes. The oracle is always the bytes that were there before (or that an uninterrupted
run writes), never the code's own idea of "done"."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chromaflow.conf import load_config
from chromaflow.stages import ingest, lines
from chromaflow.stages.runner import is_done
from chromaflow.storage.atomic import TMP_MARK, atomic_path, remove_stale_temp_files, write_bytes
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import read_shard, write_shard


def test_exception_inside_an_atomic_write_leaves_the_old_target_byte_identical(tmp_path):
    target = tmp_path / "out" / "report.html"
    write_bytes(target, b"the old, complete report")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of a new rep")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"the old, complete report"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(TMP_MARK)]


def test_a_shard_writer_that_fails_midway_keeps_the_previous_shard(tmp_path):
    path = tmp_path / "lines" / "job-000000.tar"
    write_shard(path, [{"__key__": "p000000", "png": b"old"}])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="must not contain"):
        # The second sample is refused after the first was written into the temp tar.
        write_shard(path, [{"__key__": "p000000", "png": b"new"}, {"__key__": "bad.key", "png": b"x"}])
    assert path.read_bytes() == before
    assert [s["png"] for s in read_shard(path)] == [b"old"]


def _small_job(tmp_path, chapter_dir) -> tuple[JobDir, object]:
    config = load_config(overrides=["job.shard_size=2", "colorize.work_size=256"])
    job = JobDir(tmp_path / "job", "ch")
    job.root.mkdir()
    job.write_info({"name": "ch", "kind": "chapter", "source": str(chapter_dir), "refs": "", "config": {}})
    ingest.run(job, chapter_dir, config)
    for shard in range(job.num_shards()):
        lines.run(job, shard, config)
    return job, config


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_finished_shard_whose_tar_is_truncated_or_deleted_is_redone_and_only_it(tmp_path, chapter_dir):
    job, config = _small_job(tmp_path, chapter_dir)
    assert job.num_shards() == 3
    original = {k: _digest(job.shard_path("lines", k)) for k in range(3)}
    truncated, deleted = job.shard_path("lines", 1), job.shard_path("lines", 2)
    truncated.write_bytes(truncated.read_bytes()[:-700])
    deleted.unlink()
    assert is_done(job, "lines", 0, config)
    assert not is_done(job, "lines", 1, config) and not is_done(job, "lines", 2, config)
    untouched = job.shard_path("lines", 0).stat().st_mtime_ns
    results = [lines.run(job, k, config) for k in range(3)]
    assert [r.status for r in results] == ["cached", "ok", "ok"]
    assert job.shard_path("lines", 0).stat().st_mtime_ns == untouched
    # The redone shards are the very bytes the first run wrote (shards are deterministic).
    assert {k: _digest(job.shard_path("lines", k)) for k in range(3)} == original


WRITER = textwrap.dedent("""
    import sys
    from chromaflow.storage.shards import write_shard
    # ~400 MB of samples: the write takes long enough to be killed while it is writing.
    samples = [{"__key__": f"p{i:06d}", "png": bytes([i % 251]) * (4 << 20)} for i in range(100)]
    write_shard(sys.argv[1], samples)
""")


@pytest.mark.slow
def test_kill_during_the_actual_write_leaves_the_old_shard_and_a_sweepable_temp(tmp_path):
    path = tmp_path / "colorize" / "job-000000.tar"
    write_shard(path, [{"__key__": "p000000", "png": b"old"}])
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            temps = [p for p in path.parent.iterdir() if p.name.startswith(TMP_MARK)]
            if temps and temps[0].stat().st_size > (32 << 20):  # well inside the write
                break
            assert proc.poll() is None, "the writer finished before it could be killed"
            time.sleep(0.01)
        else:
            pytest.fail("the writer never started writing")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert path.read_bytes() == before  # readers still see the old, complete shard
    assert remove_stale_temp_files(tmp_path) == 1
    # Resuming writes the new shard in full.
    write_shard(path, [{"__key__": "p000000", "png": b"new"}])
    assert [s["png"] for s in read_shard(path)] == [b"new"]
