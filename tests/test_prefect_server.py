"""Scheduled inbox runs against a real `prefect server start` (temporary PREFECT_HOME, SQLite,
127.0.0.1, a free port) and a real `chromaflow serve`, as the README tells a new user:

an inbox holds two chapters, one with a corrupt page; `chromaflow serve --inbox ... --interval`
colorizes both within two schedule ticks (the bad page named in the run's log and in the
problems artifact, the good pages written, no traceback anywhere), a later tick completes
with nothing left to do, and a plain `chromaflow serve` after a restart keeps the schedule
and runs it again. (With SQLAlchemy 2.1 the server's scheduler never creates a run.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from synthetic import make_chapter, make_refs

CLI = [sys.executable, "-m", "chromaflow.cli"]
PREFECT = str(Path(sys.executable).parent / "prefect")
INTERVAL = 15  # seconds between inbox ticks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (serve pauses its deployments), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false", PREFECT_RUNNER_POLL_FREQUENCY="2", PYTHONUNBUFFERED="1")
    log = open(home / "server.log", "w")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"true":
                    break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, (home / "server.log").read_text()[-3000:]
            time.sleep(1)
        yield env
    finally:
        _stop(server)
        log.close()
        server_log = (home / "server.log").read_text()
        assert "Can't evaluate bulk DML" not in server_log, server_log[-3000:]


@pytest.fixture
def client(server_env):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server_env["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as api:
            yield api


def _runs(client, flow_name: str) -> list:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                 sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200)


def _wait_for(what: str, check, timeout: float, serve: subprocess.Popen, serve_log: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        assert serve.poll() is None, serve_log.read_text()[-4000:]
        time.sleep(2)
    pytest.fail(f"{what} within {timeout}s\n" + serve_log.read_text()[-4000:])


def _logs(client, run_ids) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(run_ids))), limit=200)


@pytest.mark.slow
def test_scheduled_inbox_colorizes_new_chapters_and_survives_serve_restart(server_env, client, tmp_path):
    from chromaflow.flows.job_state import job_id

    refs = make_refs(tmp_path / "refs")
    inbox, out_root = tmp_path / "inbox", tmp_path / "jobs"
    make_chapter(inbox / "ch01", num_pages=2, size=(160, 224))
    bad = make_chapter(inbox / "ch02", num_pages=2, size=(160, 224))
    (bad / "page2.png").write_bytes(b"not a png")
    (inbox / "notes.txt").write_text("not a chapter")
    serve_log = tmp_path / "serve.log"
    cmd = CLI + ["serve", "--inbox", str(inbox), "--refs", str(refs), "--out-root", str(out_root),
                 "--interval", str(INTERVAL), "--set", "job.shard_size=4"]
    with open(serve_log, "w") as log:
        serve = subprocess.Popen(cmd, env=server_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        def idle_tick():  # a scheduled run that found both chapters finished
            return [r for r in _runs(client, "colorize-inbox")
                    if r.state and r.state.is_completed() and "0 colorized, 2 finished earlier" in r.state.message]

        _wait_for("an inbox tick with nothing left to do", idle_tick, 600, serve, serve_log)
        inbox_runs = [r for r in _runs(client, "colorize-inbox") if r.state and r.state.is_final()
                      and not r.state.is_cancelled()]
        assert all(r.auto_scheduled for r in inbox_runs)  # created by the server's scheduler
        # Both chapters were colorized by the first two ticks, each as its own run named after it.
        chapters = {r.name: r for r in _runs(client, "colorize-chapter")}
        ids = {name: job_id(out_root / name) for name in ("ch01", "ch02")}
        assert set(chapters) == {f"ch01-{ids['ch01']}", f"ch02-{ids['ch02']}"}
        parents = {client.read_task_run(r.parent_task_run_id).flow_run_id for r in chapters.values()}
        assert parents <= {r.id for r in inbox_runs[:2]}
        assert sorted(p.name for p in (out_root / "ch01" / "pages").glob("*.png")) == ["0001_page1.png",
                                                                                       "0002_page2.png"]
        assert sorted(p.name for p in (out_root / "ch02" / "pages").glob("*.png")) == ["0001_page1.png"]
        good, broken = chapters[f"ch01-{ids['ch01']}"], chapters[f"ch02-{ids['ch02']}"]
        assert good.state.is_completed() and broken.state.is_failed()
        assert "1/2 pages written" in broken.state.message and "page2.png" in broken.state.message
        assert "\n" not in broken.state.message
        # The bad page is named in the chapter run's log; nothing anywhere shows a traceback.
        broken_logs = _logs(client, [broken.id])
        assert any("page2.png" in log.message and "not a readable image" in log.message for log in broken_logs)
        every_log = _logs(client, [r.id for r in inbox_runs] + [good.id, broken.id])
        assert every_log and not [log.message for log in every_log if "Traceback" in log.message]
        problems = client.read_artifacts(artifact_filter=_key_filter(f"ch02-{ids['ch02']}-problems"))
        assert problems and "page2.png" in str(problems[0].data) and "not a readable image" in str(problems[0].data)
        clean = client.read_artifacts(artifact_filter=_key_filter(f"ch01-{ids['ch01']}-problems"))
        assert clean and "none" in str(clean[0].data)

        # Restart serve without any flag: the schedule (and its parameters) stay, and it runs again.
        _stop(serve)
        restarted = time.time()
        with open(serve_log, "a") as log:
            serve = subprocess.Popen(CLI + ["serve"], env=server_env, cwd=tmp_path, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deployment = _wait_for("serve to resume colorize-inbox/default",
                               lambda: (d := client.read_deployment_by_name("colorize-inbox/default"))
                               and not d.paused and d, 180, serve, serve_log)
        [schedule] = deployment.schedules
        assert schedule.slug == "chromaflow-serve" and schedule.active
        assert schedule.schedule.interval.total_seconds() == INTERVAL
        assert schedule.parameters["inbox"] == str(inbox.resolve())
        assert deployment.parameters["out_root"] == str(out_root.resolve())
        _wait_for("a tick after the restart", lambda: [r for r in idle_tick() if r.end_time.timestamp() > restarted],
                  300, serve, serve_log)
    finally:
        _stop(serve)


def _key_filter(key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    return ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
