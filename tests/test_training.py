"""The training flows end to end on tiny models (conf/tiny.yaml): a real Prefect API, a real
Ray cluster shared by all runs (Ray Train TorchTrainer, gloo DDP on CPU), real shards built
from colored OpenMoji pages, a real SIGKILL of the CLI and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from chromaflow.conf import load_config  # noqa: E402
from chromaflow.training.checkpoint import list_checkpoints, read_trainer_state, step_dir  # noqa: E402
from chromaflow.training.report import read_metrics  # noqa: E402
from training_data import CORRUPT_PAGE, make_colored_archive  # noqa: E402

TINY = str(Path(__file__).resolve().parent.parent / "conf" / "tiny.yaml")
NO_VALIDATION = ["train.validate_every=0"]
SHORT = ["train.steps=8", "train.checkpoint_every=2", *NO_VALIDATION]


@pytest.fixture(scope="module")
def training_set(tmp_path_factory, prefect_harness):
    from chromaflow.flows.train import build_training_set

    root = tmp_path_factory.mktemp("train_e2e")
    src = make_colored_archive(root / "archive", chapters=2, pages=4)
    with pytest.warns(UserWarning, match=CORRUPT_PAGE):
        summary = build_training_set(str(src), str(root / "data"), TINY)
    return root / "data", summary


@pytest.fixture(scope="module")
def colorizer_run(training_set, ray_cluster, tmp_path_factory):
    from chromaflow.flows.train import train_colorizer

    run = tmp_path_factory.mktemp("colorizer") / "run"
    return run, train_colorizer(str(training_set[0]), str(run), TINY)


def test_training_set_flow(training_set):
    data, summary = training_set
    assert summary["splits"] == {"train": 4, "validation": 4}
    assert len(summary["skipped"]) == 1 and CORRUPT_PAGE in summary["skipped"][0]
    info = json.loads((data / "dataset.json").read_text())
    assert info["splits"]["train"]["chapters"] != info["splits"]["validation"]["chapters"]


def test_thirty_steps_lower_the_loss(colorizer_run):
    run, summary = colorizer_run
    losses = [r["loss"] for r in read_metrics(run)]
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 31))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    record = read_metrics(run)[0]
    assert record["lr"] == pytest.approx(1e-3) and record["samples_per_s"] > 0
    assert summary["steps"] == 30 and Path(summary["checkpoint"]) == step_dir(run, 30)
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["validation"]) == {0, 30} and summary["validation"][30]["psnr"] > 0


def test_checkpoint_loads_into_the_inference_pipeline_and_changes_it(colorizer_run, training_set):
    from chromaflow.models.colorflow.backend import DiffusionColorizer
    from chromaflow.models.colorflow.weights import load_colorflow
    from chromaflow.models.colorizers.base import ColorizeRequest
    from chromaflow.training.dataset import ShardReader, open_training_set

    run, _ = colorizer_run
    final = step_dir(run, 30)
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "unet_lora.safetensors"):
        assert (final / "GraySD" / name).is_file()
    components = load_colorflow(final, run / "base" / "sd15")  # the inference loader, strict key checks
    assert all(r.ok for r in components.reports)
    page = ShardReader(open_training_set(training_set[0]).shards("validation")).page(0)
    request = ColorizeRequest(key=page.key, page=np.repeat(page.gray[..., None], 3, 2), lines=page.lines,
                              kind="gray", quadrant_patches=[q[:3] for q in page.patches])
    outputs = []
    for step in (0, 30):
        config = load_config(TINY, ["colorize.backend=diffusion", f"colorize.weights={step_dir(run, step)}",
                                    f"colorize.diffusion.sd15_path={run / 'base' / 'sd15'}"])
        outputs.append(DiffusionColorizer.from_config(config).colorize(request).astype(int))
    assert outputs[0].shape == page.color.shape
    assert np.abs(outputs[1] - outputs[0]).mean() > 1.0  # trained weights change the colorization


def _wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.stdout.read().decode(errors="replace")[-3000:]
        assert time.time() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.2)


def test_kill_and_resume_gives_the_uninterrupted_curve(colorizer_run, training_set, prefect_harness, ray_cluster,
                                                       tmp_path):
    from chromaflow.flows.train import train_colorizer

    run = tmp_path / "run"
    env = dict(os.environ, PREFECT_API_URL=prefect_harness, PYTHONUNBUFFERED="1")
    # The CLI joins the session's Ray cluster (as on a studio's cluster) instead of starting its
    # own: the SIGKILL ends the driver, and Ray ends the run's train workers with it.
    short = [*SHORT, f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]
    args = [sys.executable, "-m", "chromaflow.cli", "train-colorizer", str(training_set[0]), "--out", str(run),
            "--config", TINY, *[a for s in short for a in ("--set", s)]]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # a liveness deadline, not a speed target: generous for a loaded 2-core CI machine
        _wait_for(step_dir(run, 2) / "trainer_state.json", process, timeout=900)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and its flow: the driver of the training run
        process.wait()
    killed_at = list_checkpoints(run)[-1][0]
    assert process.returncode == -signal.SIGKILL and 2 <= killed_at < 8
    summary = train_colorizer(str(training_set[0]), str(run), TINY, short)
    starts = json.loads((run / "run.json").read_text())["starts"]
    assert [s["step"] for s in starts] == [0, killed_at]  # continued from the saved step
    resumed = [r["loss"] for r in read_metrics(run)]
    # train.steps only says where a run stops: the first 8 losses of the 30-step run are the reference
    uninterrupted = [r["loss"] for r in read_metrics(colorizer_run[0])][:8]
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 9)) and summary["steps"] == 8
    np.testing.assert_allclose(resumed, uninterrupted, rtol=1e-4, atol=1e-6)


def test_two_gloo_workers_agree_on_the_parameters(training_set, ray_cluster, tmp_path):
    from chromaflow.flows.train import train_colorizer

    run = tmp_path / "run"
    train_colorizer(str(training_set[0]), str(run), TINY,
                    ["train.num_workers=2", "train.steps=2", "train.checkpoint_every=1", *NO_VALIDATION])
    first, second = (read_trainer_state(step_dir(run, s)) for s in (1, 2))
    for state in (first, second):
        assert state["world_size"] == 2 and len(state["replica_sha256"]) == 2
        assert state["replica_sha256"][0] == state["replica_sha256"][1]  # DDP kept the replicas identical
    assert first["replica_sha256"][0] != second["replica_sha256"][0]  # and a step changed them


def test_guided_sr_trains_and_completes_the_checkpoint(colorizer_run, training_set, tmp_path):
    from chromaflow.flows.train import train_guided_sr
    from chromaflow.models.colorflow.weights import load_colorflow

    colorizer = step_dir(colorizer_run[0], 30)
    run = tmp_path / "gsrp"
    summary = train_guided_sr(str(training_set[0]), str(run), TINY,
                              [f"train.init_weights={colorizer}", "train.steps=12", "train.validate_every=12",
                               "train.checkpoint_every=12", "train.lr=3e-3"])
    losses = [r["loss"] for r in read_metrics(run)]
    assert len(losses) == 12 and np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    final = step_dir(run, 12) / "GraySD"
    # its own MultiResNetModel + the colorizer's files: a complete GraySD the inference loader takes
    assert (final / "unet_lora.safetensors").read_bytes() == (colorizer / "GraySD" / "unet_lora.safetensors").read_bytes()
    components = load_colorflow(final.parent, colorizer_run[0] / "base" / "sd15")
    assert components.multires is not None
    # validation through GSRP on held-back pages improves over the untrained fusion module
    assert summary["validation"][12]["psnr"] > summary["validation"][0]["psnr"] + 0.5


def test_cli_bad_inputs_are_one_line_errors(prefect_harness, tmp_path):
    from typer.testing import CliRunner

    from chromaflow.cli import app

    result = CliRunner().invoke(app, ["train-colorizer", str(tmp_path), "--out", str(tmp_path / "run"),
                                      "--config", TINY])
    assert result.exit_code == 2 and "not a training set (no dataset.json)" in result.output
    result = CliRunner().invoke(app, ["build-training-set", str(tmp_path / "nope"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "source does not exist" in result.output
    result = CliRunner().invoke(app, ["train-guided-sr", str(tmp_path), "--out", str(tmp_path / "run"),
                                      "--set", "train.validate_every=7"])
    assert result.exit_code == 2 and "validate_every (7) must be a multiple of checkpoint_every" in result.output
