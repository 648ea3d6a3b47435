"""A run's record: RUN_DIR/metrics.jsonl (one JSON object per logged step: step, loss, lr,
samples_per_s, ...), the loss-curve plot and the validation summaries the flow publishes."""

from __future__ import annotations

import json
from pathlib import Path

from chromaflow.storage.atomic import write_bytes

METRICS = "metrics.jsonl"
LOSS_PNG = "loss.png"
VALIDATION_DIR = "validation"


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a line torn by a kill: everything after it is from the same killed run
    return records


def append_metrics(run_dir: str | Path, record: dict) -> None:
    path = Path(run_dir) / METRICS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Keep the records up to `step` (a resumed run redoes the steps after its checkpoint)."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
    write_bytes(Path(run_dir) / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())


def plot_loss_curve(run_dir: str | Path, title: str = "training loss") -> Path | None:
    """RUN_DIR/loss.png from metrics.jsonl; None when nothing was logged."""
    records = read_metrics(run_dir)
    if not records:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], color="#1f77b4", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(run_dir) / LOSS_PNG
    write_bytes(path, buf.getvalue())
    return path


def read_validations(run_dir: str | Path) -> list[dict]:
    """Every validation summary of the run, by step."""
    root = Path(run_dir) / VALIDATION_DIR
    found = [json.loads(p.read_text()) for p in root.glob("step-*/metrics.json")] if root.is_dir() else []
    return sorted(found, key=lambda v: v["step"])
