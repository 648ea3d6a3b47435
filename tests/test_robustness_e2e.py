"""Hostile conditions end to end (issue 12), with the real Prefect API, a real Ray cluster
and the real CLI: a rerun from a relative path that repairs stale exports, an all-corrupt
refs folder that fails without retries, a full disk (a small tmpfs) that stops the job
with one line and a rerun that finishes it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from chromaflow.cli import app
from chromaflow.flows.colorize import colorize_chapter
from chromaflow.stages.registry import SHARD_SETS
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import read_shard, read_stats
from synthetic import PALETTES, draw_character, write_png
from small_disk import mounted_tmpfs

CLI = [sys.executable, "-m", "chromaflow.cli"]


def cli_env(api_url: str) -> dict:
    return dict(os.environ, PREFECT_API_URL=api_url, PYTHONUNBUFFERED="1", COLUMNS="200")


def final_pages(job: JobDir) -> dict[str, bytes]:
    out = {}
    for shard in range(job.num_shards()):
        for sample in read_shard(job.shard_path("upscale", shard)):
            out[sample["__key__"]] = sample["png"]
    return out


def test_rerun_from_a_relative_path_repairs_a_stale_cbz_and_a_changed_page(prefect_harness, ray_cluster, tmp_path,
                                                                            chapter_dir, refs_dir):
    out = tmp_path / "job"
    colorize_chapter(source=str(chapter_dir), refs=str(refs_dir), out=str(out), overrides=["job.shard_size=5"])
    job = JobDir.open(out)
    expected = sorted(final_pages(job).values())
    # What a run killed between pages/ and the cbz leaves: an older cbz, and a page edited by hand.
    with zipfile.ZipFile(out / "chapter.cbz", "w") as zf:
        zf.writestr("0001_page1.png", b"old")
    page2 = out / "pages" / "0002_page2.png"
    page2.write_bytes(page2.read_bytes()[::-1])
    assert CliRunner().invoke(app, ["status", str(out)]).exit_code == 1

    rerun = subprocess.run(CLI + ["rerun", "job"], cwd=tmp_path, env=cli_env(prefect_harness), capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr and "0 shard-stages computed" in rerun.stderr
    with zipfile.ZipFile(out / "chapter.cbz") as zf:
        assert sorted(zf.read(n) for n in zf.namelist()) == expected
    assert sorted(p.read_bytes() for p in (out / "pages").glob("*.png")) == expected
    result = CliRunner().invoke(app, ["status", str(out)])
    assert result.exit_code == 0, result.output


def test_all_corrupt_refs_fail_once_without_retries(prefect_harness, ray_cluster, tmp_path, chapter_dir):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    refs = tmp_path / "refs"
    for name in ("alice/a.png", "bob/b.png"):
        (refs / name).parent.mkdir(parents=True, exist_ok=True)
        (refs / name).write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    state = colorize_chapter(source=str(chapter_dir), refs=str(refs), out=str(tmp_path / "job"), return_state=True)
    assert state.is_failed() and "no readable reference images" in state.message
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    references = [r for r in runs if r.name.startswith("references")]
    assert len(references) == 1 and references[0].run_count == 1, [(r.name, r.run_count) for r in runs]


# --- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 12 MB tmpfs (skipped where mounting is not permitted), unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "mnt", "size=12m") as mnt:
        yield mnt


def noisy_chapter(root: Path, pages: int = 6) -> Path:
    """Line-art pages with +-3 levels of noise: PNGs that do not compress (~1.5 MB a page)."""
    rng = np.random.default_rng(0)
    for i in range(pages):
        page = draw_character(PALETTES["alice" if i % 2 == 0 else "bob"], size=(900, 1260), colored=False, dx=i * 5)
        write_png(root / f"page{i + 1}.png", np.clip(page.astype(int) + rng.integers(-3, 4, page.shape), 0, 255)
                  .astype(np.uint8))
    return root


@pytest.mark.slow
def test_full_disk_stops_the_job_with_one_line_and_a_rerun_finishes_it(prefect_harness, tmp_path, refs_dir, small_tmpfs):
    chapter = noisy_chapter(tmp_path / "chapter")
    out = small_tmpfs / "job"
    run = subprocess.run(CLI + ["colorize", str(chapter), "--refs", str(refs_dir), "--out", str(out),
                                "--set", "job.shard_size=2", "--set", "ray.num_actors=1"],
                         env=cli_env(prefect_harness), capture_output=True, text=True, timeout=900)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    error = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, run.stderr[-3000:]
    assert f"{out}/" in error[0] and "no space left on device (this file needs" in error[0] and "free there" in error[0]
    assert "Retry" not in run.stdout + run.stderr  # no retries: a full disk fails the same way every time
    job = JobDir.open(out)
    finished = {(stage, k): job.shard_path(stage, k).stat().st_mtime_ns for stage in SHARD_SETS
                for k in range(job.num_shards()) if read_stats(job, stage, k)}
    assert finished and len(finished) < len(SHARD_SETS) * 3  # it stopped part way, keeping what it wrote

    subprocess.run(["mount", "-o", "remount,size=200m", str(small_tmpfs)], check=True)  # space freed
    rerun = subprocess.run(CLI + ["rerun", str(out)], env=cli_env(prefect_harness), capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert all(job.shard_path(stage, k).stat().st_mtime_ns == mtime for (stage, k), mtime in finished.items())
    assert len(list((out / "pages").glob("*.png"))) == 6 and (out / "chapter.cbz").exists()
    assert not [p for p in out.rglob("*") if ".chromaflow-tmp-" in p.name]  # swept under the lock
    assert CliRunner().invoke(app, ["status", str(out)]).exit_code == 0
