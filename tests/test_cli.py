"""The `chromaflow` command as a user runs it: real subprocesses, a real Prefect API
(the session harness, passed as PREFECT_API_URL), SIGKILL in the middle of a run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chromaflow.cli import app
from chromaflow.stages.registry import SHARD_SETS as STAGES
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import read_stats

CLI = [sys.executable, "-m", "chromaflow.cli"]
PREFECT = [str(Path(sys.executable).parent / "prefect")]  # the venv's prefect CLI


def cli_env(api_url: str, **extra: str) -> dict:
    env = dict(os.environ, PREFECT_API_URL=api_url, PYTHONUNBUFFERED="1", COLUMNS="200")
    env.update(extra)
    return env


def test_unknown_config_key_is_one_line_error(tmp_path, chapter_dir, refs_dir):
    result = CliRunner().invoke(app, ["colorize", str(chapter_dir), "--refs", str(refs_dir), "--out",
                                      str(tmp_path / "o"), "--set", "colorize.wrk_size=3"])
    assert result.exit_code == 2
    assert "unknown key 'colorize.wrk_size'" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("ray:\n  num_actor: 3\n")
    result = CliRunner().invoke(app, ["colorize", str(chapter_dir), "--refs", str(refs_dir), "--out",
                                      str(tmp_path / "o"), "--config", str(bad)])
    assert result.exit_code == 2 and f"{bad}: unknown key 'ray.num_actor'" in result.output


def test_broken_palette_seed_is_one_line_error_before_work(prefect_harness, tmp_path, chapter_dir, refs_dir):
    seed = tmp_path / "series.json"
    seed.write_text("{nope")
    result = CliRunner().invoke(app, ["colorize", str(chapter_dir), "--refs", str(refs_dir), "--out",
                                      str(tmp_path / "o"), "--set", f"colorize.palette_memory_seed={seed}"])
    assert result.exit_code == 2, result.output
    assert f"{seed}: unreadable palette memory" in result.output
    assert not (tmp_path / "o" / "job.json").exists()  # no job was started


def _flow_run_count() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(limit=200))


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.output


def test_argument_errors_are_one_line_exit_2_before_any_run_or_folder(prefect_harness, tmp_path, chapter_dir,
                                                                      refs_dir):
    runs = _flow_run_count()
    out = tmp_path / "o"
    colorize = ["colorize", "--out", str(out)]
    _one_line_error(CliRunner().invoke(app, colorize + [str(chapter_dir), "--refs", str(tmp_path / "nope")]),
                    f"{tmp_path / 'nope'}: reference folder does not exist")
    _one_line_error(CliRunner().invoke(app, colorize + [str(tmp_path / "gone"), "--refs", str(refs_dir)]),
                    f"{tmp_path / 'gone'}: source does not exist")
    broken = tmp_path / "broken.cbz"
    broken.write_bytes(b"this is not a zip archive")
    _one_line_error(CliRunner().invoke(app, colorize + [str(broken), "--refs", str(refs_dir)]),
                    f"{broken}: not a readable zip/cbz archive")
    empty = tmp_path / "empty-chapter"
    empty.mkdir()
    _one_line_error(CliRunner().invoke(app, colorize + [str(empty), "--refs", str(refs_dir)]),
                    f"{empty}: holds no page images")
    _one_line_error(CliRunner().invoke(app, colorize + [str(chapter_dir), "--refs", str(refs_dir), "--set",
                                                        "ray.num_actors=0"]), "ray.num_actors")
    assert not out.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "job.json").write_text('{"name": "ep01"}')
    _one_line_error(CliRunner().invoke(app, ["colorize", str(chapter_dir), "--refs", str(refs_dir), "--out",
                                             str(other)]), "holds job 'ep01', not 'chapter'")
    _one_line_error(CliRunner().invoke(app, ["rerun", str(tmp_path)]), "not a chromaflow job folder")
    _one_line_error(CliRunner().invoke(app, ["rerun", str(other)]), f"{other / 'job.json'}: unusable")
    _one_line_error(CliRunner().invoke(app, ["index", str(tmp_path / "nope"), "--out", str(tmp_path / "idx")]),
                    "reference folder does not exist")
    assert not (tmp_path / "idx").exists()
    assert _flow_run_count() == runs  # no flow run was created for any of them


def test_serve_flags_are_checked_before_serving(tmp_path, refs_dir):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    base = ["serve", "--inbox", str(inbox), "--refs", str(refs_dir), "--out-root", str(tmp_path / "jobs")]
    _one_line_error(CliRunner().invoke(app, ["serve", "--interval", "60"]), "go with --inbox")
    _one_line_error(CliRunner().invoke(app, ["serve", "--inbox", str(inbox)]), "--inbox needs --refs and --out-root")
    _one_line_error(CliRunner().invoke(app, base + ["--cron", "every day"]), "--cron 'every day': not a cron")
    _one_line_error(CliRunner().invoke(app, base + ["--cron", "0 * * * *", "--interval", "60"]), "not both")
    _one_line_error(CliRunner().invoke(app, base + ["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"]),
                    "not an IANA time zone")
    _one_line_error(CliRunner().invoke(app, base + ["--interval", "0"]), "must be a positive number")
    _one_line_error(CliRunner().invoke(app, base[:2] + [str(tmp_path / "nowhere")] + base[3:]),
                    "inbox folder does not exist")
    _one_line_error(CliRunner().invoke(app, base + ["--set", "colorize.wrk=1"]), "unknown key 'colorize.wrk'")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        _one_line_error(CliRunner().invoke(app, base + ["--interval", "60"]), "schedules need a Prefect server")
    assert not (tmp_path / "jobs").exists()


def test_index_command_builds_then_reuses(prefect_harness, tmp_path, refs_dir):
    args = ["index", str(refs_dir), "--out", str(tmp_path / "index")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "4 references (0 reused)" in first.output and "alice" in first.output and "bob" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "4 references (4 reused)" in again.output


def _files(job: JobDir) -> dict[str, tuple[int, str]]:
    out = {}
    for stage in STAGES:
        for path in job.stage_dir(stage).glob("*"):
            out[str(path.relative_to(job.root))] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.mark.slow
def test_sigkill_mid_colorize_then_rerun(prefect_harness, tmp_path, refs_dir):
    from synthetic import make_chapter

    chapter = make_chapter(tmp_path / "chapter", num_pages=6)
    out = tmp_path / "job"
    cmd = CLI + ["colorize", str(chapter), "--refs", str(refs_dir), "--out", str(out),
                 "--set", "job.shard_size=1", "--set", "colorize.backend=faulty_backend:SlowColorizer",
                 "--set", "ray.num_actors=1"]
    proc = subprocess.Popen(cmd, env=cli_env(prefect_harness, CHROMAFLOW_TEST_DELAY="1.5"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            done = list((out / "colorize").glob("*.stats.json")) if (out / "colorize").exists() else []
            if len(done) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail("run ended before it could be killed:\n" + proc.stdout.read().decode()[-3000:])
            time.sleep(0.1)
        else:
            pytest.fail("colorize never reached two finished shards")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole run: driver, Ray daemons and actors
        proc.wait()
    job = JobDir.open(out)
    finished = {(stage, k) for stage in STAGES for k in range(6) if read_stats(job, stage, k)}
    # Shards queue for the one actor in no fixed order: some shard was still unfinished.
    unfinished = [k for k in range(6) if ("upscale", k) not in finished]
    assert unfinished and any(("colorize", k) not in finished for k in unfinished)
    before = _files(job)

    rerun = subprocess.run(CLI + ["rerun", str(out)], env=cli_env(prefect_harness, CHROMAFLOW_TEST_DELAY="0"),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    after = _files(job)
    # finished shards were neither recomputed nor rewritten
    for stage, k in finished:
        for suffix in (".tar", ".stats.json"):
            name = f"{stage}/{job.name}-{k:06d}{suffix}"
            assert after[name] == before[name], f"{name} was rewritten"
    assert all(read_stats(job, stage, k) for stage in STAGES for k in range(6))
    assert len(list((out / "pages").glob("*.png"))) == 6
    assert not [p for p in out.rglob("*") if ".chromaflow-tmp-" in p.name]

    status = subprocess.run(CLI + ["status", str(out)], env=cli_env(prefect_harness), capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0 and "000005" in status.stdout


@pytest.mark.slow
def test_serve_and_prefect_deployment_run(prefect_harness, tmp_path, chapter_dir, refs_dir):
    env = cli_env(prefect_harness)
    server = subprocess.Popen(CLI + ["serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        out = tmp_path / "job"
        deadline = time.time() + 180
        while True:
            ls = subprocess.run(PREFECT + ["deployment", "ls"], env=env, capture_output=True, text=True)
            if "colorize-chapter/default" in ls.stdout and "colorize-inbox/default" in ls.stdout:
                break
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "deployments never appeared"
            time.sleep(2)
        # The deployment form documents every parameter (from the flow's docstring).
        inspect = subprocess.run(PREFECT + ["deployment", "inspect", "colorize-chapter/default"], env=env,
                                 capture_output=True, text=True)
        assert "The chapter: a folder of page images" in inspect.stdout and "Config overrides" in inspect.stdout
        run = subprocess.run(PREFECT + ["deployment", "run", "colorize-chapter/default",
                              "--param", f"source={chapter_dir}", "--param", f"refs={refs_dir}",
                              "--param", f"out={out}", "--watch", "--watch-timeout", "240"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert len(list((out / "pages").glob("*.png"))) == 5
        bogus = subprocess.run(PREFECT + ["deployment", "run", "colorize-chapter/default", "--param", "bogus=1"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert bogus.returncode == 1
        _every_other_deployment_runs_through_serve(tmp_path, chapter_dir, refs_dir, out, server)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _every_other_deployment_runs_through_serve(tmp_path, chapter_dir, refs_dir, job, server) -> None:
    """Each deployment of flows/deployments.py started once by the serving process: the cheap
    ones to a real result, the costly ones (training, which needs a built set) on inputs they
    refuse with their own one-line message, which proves serve ran the flow's code."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from chromaflow.flows.deployments import FLOWS
    from synthetic import PALETTES, draw_character, write_png

    evalset = tmp_path / "evalset"
    for i, dx in enumerate((0, 12)):
        write_png(evalset / "alice" / f"v{i}_line.png", draw_character(PALETTES["alice"], size=(128, 160), dx=dx,
                                                                      colored=False, frame=False))
        write_png(evalset / "alice" / f"v{i}_color.png", draw_character(PALETTES["alice"], size=(128, 160), dx=dx,
                                                                       frame=False))
    (tmp_path / "inbox").mkdir()
    eval_out = tmp_path / "eval"
    runs = {  # deployment: (parameters, final state, then: what it wrote, or the words of its message)
        # (an episode end to end: tests/test_pipeline.py; here the deployment is the episode flow)
        "colorize-episode": ({"source": str(chapter_dir), "refs": str(refs_dir), "out": str(tmp_path / "ep")},
                             "FAILED", f"{chapter_dir}: is an chapter source; use the colorize-chapter flow"),
        "rerun-failed-shards": ({"out": str(job)}, "COMPLETED", lambda: reruns_nothing(job)),
        "colorize-inbox": ({"inbox": str(tmp_path / "inbox"), "refs": str(refs_dir),
                            "out_root": str(tmp_path / "jobs")}, "COMPLETED", lambda: True),
        "build-reference-index": ({"refs": str(refs_dir), "out": str(tmp_path / "index")}, "COMPLETED",
                                  lambda: (tmp_path / "index" / "store.json").is_file()),
        "evaluate": ({"dataset": str(evalset), "out": str(eval_out), "backends": ["region"]}, "COMPLETED",
                     lambda: json.loads((eval_out / "metrics.json").read_text())["backends"]["region"]["pairs"] == 2),
        "build-training-set": ({"source": str(tmp_path / "no-archive"), "out": str(tmp_path / "set")}, "FAILED",
                               str(tmp_path / "no-archive")),
        "train-colorizer": ({"data": str(tmp_path / "no-set"), "out": str(tmp_path / "run1")}, "FAILED",
                            str(tmp_path / "no-set")),
        "train-guided-sr": ({"data": str(tmp_path / "no-set"), "out": str(tmp_path / "run2")}, "FAILED",
                            str(tmp_path / "no-set")),
    }
    before = _files(JobDir.open(job))

    def reruns_nothing(root):
        return _files(JobDir.open(root)) == before

    assert set(runs) | {"colorize-chapter"} == {f.name for f in FLOWS}  # every deployment, once
    started = {name: run_deployment(f"{name}/default", parameters=params, timeout=0).id
               for name, (params, _, _) in runs.items()}
    deadline = time.time() + 600
    with get_client(sync_client=True) as client:
        while True:
            states = {name: client.read_flow_run(run_id).state for name, run_id in started.items()}
            if all(state.is_final() for state in states.values()):
                break
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            assert time.time() < deadline, {n: s.type.value for n, s in states.items()}
            time.sleep(2)
    for name, (_, expected, then) in runs.items():
        state = states[name]
        assert state.type.value == expected, (name, state.type.value, state.message)
        assert then() if callable(then) else then in state.message, (name, state.message)
        assert "Traceback" not in (state.message or ""), (name, state.message)


@pytest.mark.slow
def test_prefect_yaml_deploys_with_the_inbox_schedules(prefect_harness, tmp_path):
    """`prefect deploy --all` accepts prefect.yaml as shipped (a work-pool setup)."""
    from prefect.client.orchestration import get_client

    env = cli_env(prefect_harness)
    pool = subprocess.run(PREFECT + ["work-pool", "create", "chromaflow", "--type", "process"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert pool.returncode == 0 or "already exists" in pool.stdout, pool.stdout + pool.stderr
    deploy = subprocess.run(PREFECT + ["--no-prompt", "deploy", "--all", "--prefect-file",
                                       str(Path(__file__).parents[1] / "prefect.yaml")],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    with get_client(sync_client=True) as client:
        inbox = client.read_deployment_by_name("colorize-inbox/default")
        client.delete_deployment(inbox.id)  # its schedule would keep making runs in the session's API
    assert inbox.parameters == {"inbox": "/data/inbox", "refs": "/data/refs", "out_root": "/data/jobs"}
    assert inbox.global_concurrency_limit.limit == 1
    assert inbox.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    schedules = {s.slug: s for s in inbox.schedules}
    assert schedules["inbox-every-15-minutes"].schedule.cron == "*/15 * * * *"
    assert schedules["inbox-every-15-minutes"].active and not schedules["inbox-hourly"].active
    assert schedules["inbox-hourly"].schedule.interval.total_seconds() == 3600
