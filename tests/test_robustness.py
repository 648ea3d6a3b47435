"""Hostile conditions without the orchestrators (issue 12): exports derived from content and
repaired, `chromaflow status` on interrupted jobs, the job lock against a second run,
bounded reading of archives, symlinks out of a chapter, animated pages, tiled upscaling,
argument errors that create nothing. The end-to-end cases (Prefect, Ray, a full tmpfs)
are in tests/test_robustness_e2e.py."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from chromaflow.cli import app
from chromaflow.conf import Config, load_config
from chromaflow.models.upscale import guided_upsample, upsample_rows
from chromaflow.stages import export, ingest
from chromaflow.stages.registry import INGEST, SHARD_SETS, stage_config_sha, stage_key
from chromaflow.stages.runner import finish_shard
from chromaflow.storage.atomic import DiskFull
from chromaflow.storage.images import encode_png
from chromaflow.storage.job import JobDir, JobLocked, job_lock
from chromaflow.storage.shards import json_bytes, read_shard
from chromaflow.storage.sources import ReadLimits, list_chapter
from synthetic import PALETTES, draw_character, write_png

# --- a finished job folder, written with the real shard writer (no Prefect, no Ray) ------


def page_png(seed: int, size=(96, 128)) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def write_stage(job: JobDir, config: Config, stage: str, shard: int, pngs: dict[int, bytes]) -> None:
    """One finished (stage, shard) whose stats chain to its inputs like a real run's."""
    samples = []
    for index, png in pngs.items():
        meta = {"index": index, "source": f"page{index + 1}.png", "width": 96, "height": 128, "scene_id": 0,
                "kind": "chapter", "identities": ["alice"], "references": ["alice_0.png"]}
        samples.append({"__key__": f"p{index:06d}", "png": png, "json": json_bytes(meta)})
    if stage == INGEST:
        keys = ("source", stage_config_sha(config, INGEST))
    else:
        keys = stage_key(job, stage, shard, config)
    finish_shard(job, stage, shard, samples, [], keys[0], keys[1], time.time())


def finished_job(tmp_path: Path, pages: int = 4, shard_size: int = 2) -> tuple[JobDir, Config]:
    config = load_config(overrides=[f"job.shard_size={shard_size}"])
    job = JobDir(tmp_path / "job", "ch")
    job.root.mkdir(parents=True)
    job.write_info({"name": "ch", "kind": "chapter", "source": "src", "refs": "refs", "num_items": pages,
                    "num_shards": (pages + shard_size - 1) // shard_size, "config": config.model_dump(mode="json")})
    for shard in range(job.num_shards()):
        indexes = range(shard * shard_size, min(pages, (shard + 1) * shard_size))
        for stage in SHARD_SETS:
            write_stage(job, config, stage, shard, {i: page_png(i) for i in indexes})
    return job, config


def replace_final(job: JobDir, config: Config, shard: int, pngs: dict[int, bytes]) -> None:
    """A later run's result for one final shard (e.g. after an upscale setting changed)."""
    write_stage(job, config, "upscale", shard, pngs)


def cbz_pages(job: JobDir) -> dict[str, bytes]:
    with zipfile.ZipFile(job.root / "chapter.cbz") as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def final_pngs(job: JobDir) -> dict[str, bytes]:
    """The oracle: what pages/ and the cbz must hold, read straight from the final shards."""
    out = {}
    for shard in range(job.num_shards()):
        for sample in read_shard(job.shard_path("upscale", shard)):
            meta = json.loads(sample["json"])
            out[f"{meta['index'] + 1:04d}_page{meta['index'] + 1}.png"] = sample["png"]
    return out


def status(job: JobDir):
    return CliRunner().invoke(app, ["status", str(job.root)])


# --- 1. exports derived from content -------------------------------------------------------


def test_cbz_left_stale_between_pages_and_cbz_is_rebuilt_by_an_export_that_computed_nothing(tmp_path):
    job, config = finished_job(tmp_path)
    export.run(job, [])
    assert cbz_pages(job) == final_pngs(job) and status(job).exit_code == 0
    old_cbz = (job.root / "chapter.cbz").read_bytes()

    # A run changes page 3's result and dies between writing pages/ and replacing the cbz
    # (made deterministic: the cbz's place is taken by a folder, so its rename fails).
    replace_final(job, config, 1, {2: page_png(100), 3: page_png(3)})
    (job.root / "chapter.cbz").unlink()
    (job.root / "chapter.cbz").mkdir()
    with pytest.raises(OSError):
        export.run(job, [], force=True)
    (job.root / "chapter.cbz").rmdir()
    (job.root / "chapter.cbz").write_bytes(old_cbz)  # what the killed run left
    assert (job.pages / "0003_page3.png").read_bytes() == page_png(100)  # pages/ is new ...
    assert cbz_pages(job)["0003_page3.png"] == page_png(2)  # ... the cbz is not

    result = status(job)
    assert result.exit_code == 1 and "chapter.cbz: missing or stale" in result.output
    export.run(job, [], force=False)  # a rerun that recomputed nothing
    assert cbz_pages(job) == final_pngs(job)
    assert status(job).exit_code == 0


def test_changed_or_deleted_pages_and_report_are_repaired(tmp_path):
    job, _ = finished_job(tmp_path)
    export.run(job, [])
    report = (job.root / "report.html").read_bytes()
    page = job.pages / "0002_page2.png"
    page.write_bytes(page.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    (job.pages / "0004_page4.png").unlink()
    (job.pages / "9999_intruder.png").write_bytes(page_png(9))
    (job.root / "report.html").write_text("edited")
    result = status(job)
    assert result.exit_code == 1
    for text in ("0002_page2.png: missing or changed", "0004_page4.png: missing or changed",
                 "9999_intruder.png: not a page of this job's result", "report.html: missing or stale"):
        assert text in result.output
    export.run(job, [], force=False)
    assert {p.name: p.read_bytes() for p in job.pages.glob("*.png")} == final_pngs(job)
    assert (job.root / "report.html").read_bytes() == report
    assert status(job).exit_code == 0


def test_unchanged_export_rewrites_nothing_and_report_follows_the_problems(tmp_path):
    job, _ = finished_job(tmp_path)
    export.run(job, [])
    stamp = {p.name: p.stat().st_mtime_ns for p in [*job.pages.glob("*.png"), job.root / "chapter.cbz",
                                                    job.root / "report.html"]}
    export.run(job, [])
    assert stamp == {p.name: p.stat().st_mtime_ns for p in [*job.pages.glob("*.png"), job.root / "chapter.cbz",
                                                             job.root / "report.html"]}
    export.run(job, ["page page9.png: corrupt"])  # other problems: only the report changes
    assert "page9.png: corrupt" in (job.root / "report.html").read_text()
    assert (job.root / "chapter.cbz").stat().st_mtime_ns == stamp["chapter.cbz"]


def test_cbz_switched_off_removes_the_old_one(tmp_path):
    job, _ = finished_job(tmp_path)
    export.run(job, [])
    info = job.read_info()
    info["config"]["export"]["cbz"] = False
    job.write_info(info)
    export.run(job, [])
    assert not (job.root / "chapter.cbz").exists() and status(job).exit_code == 0


# --- 7. status of interrupted jobs ---------------------------------------------------------


def test_status_fails_for_a_job_killed_during_ingest(tmp_path):
    job = JobDir(tmp_path / "job", "ch")
    job.root.mkdir()
    job.write_info({"name": "ch", "kind": "chapter", "source": "s", "refs": "r",
                    "config": Config().model_dump(mode="json")})  # what prepare_job writes
    result = status(job)
    assert result.exit_code == 1 and "ingest has not finished" in result.output


def test_status_fails_for_an_interrupted_export(tmp_path):
    job, _ = finished_job(tmp_path)
    export.export_pages(job, {})  # pages written, then killed: no cbz, no export.json
    result = status(job)
    assert result.exit_code == 1 and "export.json: missing, the export has not finished" in result.output


def test_status_names_a_stale_shard(tmp_path):
    job, config = finished_job(tmp_path)
    export.run(job, [])
    write_stage(job, config, "ingest", 0, {0: page_png(50), 1: page_png(1)})  # new input, nothing after it
    result = status(job)
    assert result.exit_code == 1 and "shard 000000 lines: stale" in result.output


# --- 2. one writer per job -----------------------------------------------------------------

HOLDER = """
import sys, time
from chromaflow.storage.job import job_lock
with job_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(root: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_lock_names_the_holder_wait_waits_and_kill_9_releases(tmp_path):
    root = tmp_path / "job"
    holder = hold_lock(root, 60)
    try:
        with pytest.raises(JobLocked, match=rf"another chromaflow run is writing this job folder \(pid {holder.pid} "
                                            rf"on .*, started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\)"):
            with job_lock(root):
                pass
        os.kill(holder.pid, signal.SIGKILL)  # the kernel drops the lock with the process
        holder.wait()
        with job_lock(root):
            with job_lock(root):  # nested in the same thread: shared, not a deadlock
                pass
    finally:
        holder.kill()
    holder = hold_lock(root, 1.5)
    started, seen = time.time(), []
    with job_lock(root, wait=True, on_wait=seen.append):
        assert time.time() - started > 0.5 and f"pid {holder.pid}" in seen[0]
    holder.wait()


def test_second_colorize_on_a_busy_job_exits_2_at_once_and_touches_nothing(tmp_path, chapter_dir, refs_dir):
    out = tmp_path / "job"
    out.mkdir()
    in_flight = out / ".chromaflow-tmp-chapter.cbz.x1"  # the running job's temp file
    in_flight.write_bytes(b"partial")
    holder = hold_lock(out, 60)
    try:
        started = time.time()
        result = CliRunner().invoke(app, ["colorize", str(chapter_dir), "--refs", str(refs_dir), "--out", str(out),
                                          "--set", "colorize.work_size=768"])
        assert result.exit_code == 2, result.output
        assert f"pid {holder.pid}" in result.output and "--wait" in result.output
        assert time.time() - started < 30
        assert in_flight.exists() and not (out / "job.json").exists()  # no sweep, no job.json
    finally:
        holder.kill()
        holder.wait()


# --- 9. argument errors create nothing -----------------------------------------------------


def test_argument_errors_create_no_job_folder(tmp_path, chapter_dir, refs_dir):
    for args in (["colorize", str(chapter_dir), "--refs", str(tmp_path / "nope"), "--out", str(tmp_path / "a")],
                 ["colorize", str(tmp_path / "missing"), "--refs", str(refs_dir), "--out", str(tmp_path / "b")],
                 ["colorize", str(chapter_dir), "--refs", str(refs_dir), "--out", str(tmp_path / "c"),
                  "--set", "job.shard_size=0"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chapter", "refs"]


# --- 3. bounded reading of archives --------------------------------------------------------


def _lie_about_size(path: Path, name: str, declared: int) -> None:
    """Patch an entry's uncompressed size in both the local and the central header."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    data[info.header_offset + 22:info.header_offset + 26] = declared.to_bytes(4, "little")
    central = bytes(data).index(b"PK\x01\x02")  # the first central record: this entry's
    data[central + 24:central + 28] = declared.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_archive_entries_are_refused_by_declared_size_and_capped_when_it_lies(tmp_path):
    page = draw_character(PALETTES["alice"], colored=False)
    cbz = tmp_path / "c.cbz"
    with zipfile.ZipFile(cbz, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a_bomb.png", b"\0" * (8 << 20))  # 8 MiB of zeros, a few KB packed
        zf.writestr("b_ok.png", cv2.imencode(".png", page)[1].tobytes())
    limits = ReadLimits(max_bytes=4 << 20)
    bomb, ok = list_chapter(cbz, limits).pages
    assert bomb.problem == (f"{cbz}!a_bomb.png: entry is {8 << 20} bytes uncompressed, over the limit "
                            f"(job.max_file_mb=4); refused before decompressing")
    assert ok.problem is None and ok.read()[:4] == b"\x89PNG"

    _lie_about_size(cbz, "a_bomb.png", 1000)  # the header now claims 1000 bytes
    bomb, _ = list_chapter(cbz, limits).pages
    assert bomb.problem is None
    with pytest.raises(ValueError, match=r"a_bomb\.png: corrupt archive entry"):
        bomb.read()


# --- 5. inputs stay inside -----------------------------------------------------------------


def _linked_chapter(tmp_path: Path) -> Path:
    chapter = tmp_path / "chapter"
    write_png(chapter / "p1.png", draw_character(PALETTES["alice"], colored=False))
    secret = write_png(tmp_path / "elsewhere" / "secret.png", draw_character(PALETTES["bob"], colored=True))
    (chapter / "p2.png").symlink_to(secret)
    (chapter / "p3.png").symlink_to("p1.png")  # inside the chapter: fine
    return chapter


def test_symlink_out_of_the_chapter_is_refused_by_name(tmp_path):
    chapter = _linked_chapter(tmp_path)
    job = JobDir(tmp_path / "job", "ch")
    job.root.mkdir()
    job.write_info({"name": "ch", "kind": "chapter", "source": "", "refs": "", "config": {}})
    summary = ingest.run(job, chapter, load_config())
    assert [f["name"] for f in summary.failed] == ["p2.png"]
    assert summary.failed[0]["error"] == (f"{chapter / 'p2.png'}: symlink to {tmp_path / 'elsewhere' / 'secret.png'}, "
                                          f"outside the chapter folder; refused (job.follow_symlinks is off)")
    assert [s["__key__"] for s in read_shard(job.shard_path("ingest", 0))] == ["p000000", "p000002"]
    followed = ingest.run(job, chapter, load_config(overrides=["job.follow_symlinks=true"]))
    assert followed.failed == [] and len(read_shard(job.shard_path("ingest", 0))) == 3


def test_archive_symlink_entries_resolve_inside_the_archive_only(tmp_path):
    cbz = tmp_path / "c.cbz"
    png = cv2.imencode(".png", draw_character(PALETTES["alice"], colored=False))[1].tobytes()
    with zipfile.ZipFile(cbz, "w") as zf:
        zf.writestr("pages/1.png", png)
        for name, target in (("pages/2.png", "1.png"), ("pages/3.png", "../../etc/secret.png")):
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    pages = list_chapter(cbz, ReadLimits(follow_symlinks=True)).pages
    assert [p.problem for p in pages[:2]] == [None, None] and pages[1].read() == png
    assert pages[2].problem == f"{cbz}!pages/3.png: symlink to ../../etc/secret.png, outside the archive or not a page; refused"


# --- 9. animated pages ---------------------------------------------------------------------


def test_animated_gif_page_warns_and_uses_its_first_frame(tmp_path):
    chapter = tmp_path / "chapter"
    chapter.mkdir()
    frames = [Image.new("RGB", (40, 30), color) for color in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    frames[0].save(chapter / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    job = JobDir(tmp_path / "job", "ch")
    job.root.mkdir()
    job.write_info({"name": "ch", "kind": "chapter", "source": "", "refs": "", "config": {}})
    summary = ingest.run(job, chapter, load_config())
    assert summary.warnings == [f"{chapter / 'anim.gif'}: animated image with 3 frames; only the first frame is used"]
    sample = read_shard(job.shard_path("ingest", 0))[0]
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(sample["png"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(rgb.astype(int) - (200, 30, 30)).max() <= 3  # GIF palette rounding
    assert json.loads(sample["json"])["notes"] == summary.warnings


# --- 4. tiled upscaling ----------------------------------------------------------------------


def test_upscale_in_bands_equals_the_whole_page_and_resize_geometry():
    rng = np.random.default_rng(3)
    color = cv2.resize(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8), (217, 307), interpolation=cv2.INTER_NEAREST)
    w, h = 601, 853
    # the band upsampler is a bilinear resize: OpenCV's own, up to its fixed-point rounding
    diff = np.abs(upsample_rows(color, (w, h), 0, h).astype(int) - cv2.resize(color, (w, h)))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.05
    page = np.full((h, w, 3), 255, np.uint8)
    for _ in range(25):
        cv2.circle(page, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(10, 200)), (0, 0, 0), 2)
    whole = guided_upsample(color, page, tile_pixels=w * h)
    for tile in (20_000, 100_003):  # bands of 33 and 166 rows: same pixels
        assert np.array_equal(guided_upsample(color, page, tile_pixels=tile), whole)


# --- 8. a full disk is one line --------------------------------------------------------------


def test_disk_full_is_one_line_and_survives_pickling(tmp_path):
    exc = DiskFull(f"{tmp_path}/x.tar: no space left on device (this file needs 12.0 MB, 3.0 MB free there)",
                   str(tmp_path / "x.tar"))
    again = pickle.loads(pickle.dumps(exc))
    assert isinstance(again, OSError) and again.errno == 28 and str(again) == str(exc) and "\n" not in str(again)
