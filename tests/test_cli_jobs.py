"""The `chromaflow` commands on bad input and partly failed jobs, as a user runs them
(typer's runner in this process, the session's real Prefect API and Ray cluster, real
tiny weights): the exit code, the one line that names the file, what was written.

    colorize  unknown source type, the wrong flow for the source kind   -> exit 2 / Failed, nothing made
    colorize  a corrupt page                                           -> exit 1, the rest written
    status    that job                                                 -> exit 1, the page named
    colorize  diffusion weights that fail to load                       -> exit 1, the file named, no traceback
    evaluate, convert-weights                                          -> what they print is what they wrote
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from chromaflow.cli import app
from chromaflow.flows.colorize import colorize_chapter, colorize_episode  # Prefect's logging set up outside the runner
from synthetic import make_chapter, make_video

SMALL = (160, 224)


def one_line_error(result, text: str, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.output
    return lines[0]


def test_unknown_source_type_is_one_line_exit_2(tmp_path, refs_dir):
    notes = tmp_path / "chapter.txt"
    notes.write_text("not a chapter")
    one_line_error(CliRunner().invoke(app, ["colorize", str(notes), "--refs", str(refs_dir), "--out",
                                            str(tmp_path / "o")]),
                   f"{notes}: unknown source type '.txt' (expected a folder, .cbz/.zip, an image or a video)")
    assert not (tmp_path / "o").exists()


def test_the_wrong_flow_for_the_source_kind_fails_before_work(prefect_harness, tmp_path, refs_dir):
    video = make_video(tmp_path / "ep01.mp4", num_frames=3)
    chapter = make_chapter(tmp_path / "ch01", num_pages=1, size=SMALL)
    state = colorize_chapter(source=str(video), refs=str(refs_dir), out=str(tmp_path / "a"), return_state=True)
    assert state.is_failed() and state.message == f"{video}: is an episode source; use the colorize-episode flow"
    state = colorize_episode(source=str(chapter), refs=str(refs_dir), out=str(tmp_path / "b"), return_state=True)
    assert state.is_failed() and state.message == f"{chapter}: is an chapter source; use the colorize-chapter flow"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_job_with_a_corrupt_page_exits_1_and_status_names_the_page(prefect_harness, ray_cluster, tmp_path,
                                                                     refs_dir):
    chapter = make_chapter(tmp_path / "chapter", num_pages=3, size=SMALL)
    (chapter / "page2.png").write_bytes((chapter / "page1.png").read_bytes()[:200])  # truncated
    out = tmp_path / "job"
    result = CliRunner().invoke(app, ["colorize", str(chapter), "--refs", str(refs_dir), "--out", str(out),
                                      "--set", "job.shard_size=3", "--set", "ray.num_actors=1"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"incomplete: chapter: 2/3 pages written to {out} "), result.output
    assert "1 problem(s):" in result.output and f"{chapter / 'page2.png'}: corrupt or truncated" in result.output
    assert "Traceback" not in result.output and "error:" not in result.output
    assert sorted(p.name for p in (out / "pages").glob("*.png")) == ["0001_page1.png", "0003_page3.png"]

    status = CliRunner().invoke(app, ["status", str(out)])
    assert status.exit_code == 1, status.output
    assert "shard 000000 ingest: " in status.output and "page2.png: corrupt or truncated" in status.output
    # the page fixed: a rerun completes the job and status is clean
    (chapter / "page2.png").write_bytes((chapter / "page1.png").read_bytes())
    again = CliRunner().invoke(app, ["colorize", str(chapter), "--refs", str(refs_dir), "--out", str(out),
                                     "--set", "job.shard_size=3", "--set", "ray.num_actors=1"])
    assert again.exit_code == 0, again.output
    assert CliRunner().invoke(app, ["status", str(out)]).exit_code == 0


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    pytest.importorskip("torch")
    from chromaflow.models.colorflow.tiny import write_tiny_release

    return write_tiny_release(tmp_path_factory.mktemp("cli_release"))


def test_diffusion_weights_that_fail_to_load_are_named_and_the_job_stops_cleanly(prefect_harness, ray_cluster,
                                                                                  tmp_path, refs_dir, tiny_release):
    import shutil

    colorflow, sd15 = tiny_release
    broken = tmp_path / "sd15"
    shutil.copytree(sd15, broken)
    unet = next((broken / "unet").glob("*.safetensors"))
    unet.write_bytes(unet.read_bytes()[: 4096])  # a download cut short
    chapter = make_chapter(tmp_path / "chapter", num_pages=2, size=SMALL)
    out = tmp_path / "job"
    result = CliRunner().invoke(app, [
        "colorize", str(chapter), "--refs", str(refs_dir), "--out", str(out), "--set", "job.shard_size=2",
        "--set", "ray.num_actors=1", "--set", "ray.max_shard_attempts=1", "--set", "colorize.backend=diffusion",
        "--set", f"colorize.diffusion.colorflow_path={colorflow}", "--set", f"colorize.diffusion.sd15_path={broken}",
        "--set", "colorize.diffusion.resolution=64x64", "--set", "colorize.diffusion.steps=1",
        "--set", "colorize.diffusion.device=cpu"])
    assert result.exit_code == 1, result.output
    assert str(unet) in result.output and "Traceback" not in result.output, result.output
    assert not list(out.glob("pages/*.png"))  # no page colorized by anything else
    status = CliRunner().invoke(app, ["status", str(out)])
    assert status.exit_code == 1 and str(unet) in status.output


def test_evaluate_command_prints_what_it_wrote(prefect_harness, tmp_path):
    from synthetic import PALETTES, draw_character, write_png

    data = tmp_path / "evalset"
    for i, (dx, scale) in enumerate([(0, 1.0), (12, 0.85)]):
        kw = dict(size=SMALL, dx=dx, scale=scale, frame=False)
        write_png(data / "alice" / f"v{i}_line.png", draw_character(PALETTES["alice"], colored=False, **kw))
        write_png(data / "alice" / f"v{i}_color.png", draw_character(PALETTES["alice"], **kw))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(data), "--out", str(out), "--backend", "region",
                                      "--backend", "palette"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["backends"]) == {"region", "palette"}
    for name in ("region", "palette"):
        row = next(line for line in result.output.splitlines() if line.strip("│┃ ").startswith(name))
        assert f"{metrics['backends'][name]['flat_color_accuracy']:.3f}" in row, row
    assert f"report: {out / 'report.html'}" in result.output and (out / "report.html").is_file()
    one_line_error(CliRunner().invoke(app, ["evaluate", str(tmp_path / "nope"), "--out", str(tmp_path / "e2")]),
                   str(tmp_path / "nope"))
    one_line_error(CliRunner().invoke(app, ["evaluate", str(data), "--out", str(tmp_path / "e3"), "--backend",
                                            "nope"]), "nope")


def test_convert_weights_command(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    torch.save({"k": torch.arange(6).reshape(2, 3)}, tmp_path / "w.bin")
    result = CliRunner().invoke(app, ["convert-weights", str(tmp_path / "w.bin"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert load_file(tmp_path / "out" / "w.safetensors")["k"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert "w.safetensors" in result.output
    (tmp_path / "junk.bin").write_bytes(b"\x00garbage")
    one_line_error(CliRunner().invoke(app, ["convert-weights", str(tmp_path / "junk.bin"), str(tmp_path / "o2")]),
                   f"{tmp_path / 'junk.bin'}: not a readable torch checkpoint")
    assert not (tmp_path / "o2" / "junk.safetensors").exists()
