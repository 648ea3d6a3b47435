"""Evaluation flow: score colorizer backends on a dataset of (line, color) views.

`run_evaluation` is the plain function (the CLI's `chromaflow evaluate` and the tests call
it); `evaluate_flow` is the Prefect flow around it that also publishes a table artifact.
Outputs, written atomically into `out`:
- metrics.json     {"backends": {NAME: {overall metrics, "line_f1", "pairs", "identities": {...}}},
                    "kinds": {NAME: {"pose": {...}, "recolor": {...}}}, "problems": [...], ...}
- metrics.parquet  one row per (backend, pair)
- report.html      image grid (line, reference, every backend, ground truth) + sortable table
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow

from chromaflow.conf import Config, load_config
from chromaflow.models.evaluation import (
    METRIC_KEYS, PairResult, aggregate, aggregate_kinds, check_backends, default_backends, evaluate_pair,
    load_identity_views, make_pairs, sanitize, thumbnail)
from chromaflow.storage.atomic import write_bytes, write_json
from chromaflow.storage.eval_dataset import scan_eval_dataset
from chromaflow.storage.images import encode_jpeg

log = logging.getLogger(__name__)

REPORT_MAX_ROWS_PER_IDENTITY = 6  # grid rows per identity; the table lists every pair


def run_evaluation(dataset: str | Path, out: str | Path, config: Config, backends: list[str] | None = None) -> dict:
    """Evaluate `backends` (default: the configured one plus the baselines) on `dataset`;
    write metrics.json, metrics.parquet and report.html into `out`; return the metrics dict."""
    out = Path(out)
    backends = list(dict.fromkeys(backends)) if backends else default_backends(config)
    check_backends(backends)
    data = scan_eval_dataset(dataset)
    problems = list(data.problems)
    results: dict[str, list[PairResult]] = {b: [] for b in backends}
    line_f1: list[float] = []
    line_f1_gray: list[float] = []
    grid_rows: list[dict] = []
    for identity in data.identities:
        views = load_identity_views(data, identity.name, config, problems)
        line_f1 += [v.line_f1 for v in views]
        line_f1_gray += [v.line_f1_gray for v in views]
        pairs = make_pairs(identity.name, identity.kind, views)
        log.info("%s (%s): %d views, %d pairs", identity.name, identity.kind, len(views), len(pairs))
        for n, pair in enumerate(pairs):
            row = {"identity": identity.name, "view": pair.target.view.name,
                   "line": thumbnail(pair.target.line_rgb), "reference": thumbnail(pair.references[0].color),
                   "truth": thumbnail(pair.truth.color), "outputs": {}}
            for backend in backends:
                result = evaluate_pair(pair, backend, config)
                results[backend].append(result)
                row["outputs"][backend] = thumbnail(result.output)
            if n < REPORT_MAX_ROWS_PER_IDENTITY:
                grid_rows.append(row)
    if not any(results.values()):
        problems.append(f"{dataset}: no evaluable pairs (every identity needs two readable views)")
    # Identity retrieval (issue 4): line art of view i against every identity's colored
    # views without view i; needs two identities to mean anything.
    retrieval = {}
    if len(data.identities) >= 2:
        from chromaflow.retrieval.evaluation import retrieval_topk_accuracy

        retrieval = retrieval_topk_accuracy(dataset, config)
    mean_f1 = float(np.mean(line_f1)) if line_f1 else float("nan")
    mean_f1_gray = float(np.mean(line_f1_gray)) if line_f1_gray else float("nan")
    metrics = sanitize({
        "dataset": str(dataset),
        "backends": {b: aggregate(rs, mean_f1, mean_f1_gray) for b, rs in results.items()},
        "kinds": {b: aggregate_kinds(rs) for b, rs in results.items()},
        **{k: retrieval[k] for k in ("retrieval_top1", "retrieval_top3") if k in retrieval},
        "problems": problems,
        "config_hash": config.section_hash("lines", "colorize"),
    })
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / "metrics.parquet", _parquet_bytes(results))
    write_bytes(out / "report.html", render_report(metrics, results, grid_rows).encode("utf-8"))
    write_json(out / "metrics.json", metrics)  # last: its presence means the run completed
    return metrics


def _parquet_bytes(results: dict[str, list[PairResult]]) -> bytes:
    rows = []
    for backend, rs in results.items():
        for r in rs:
            row = {"backend": backend, "identity": r.identity, "kind": r.kind, "view": r.view,
                   "references": ",".join(r.references), "seconds": r.seconds}
            row.update({k: (None if r.metrics[k] != r.metrics[k] else float(r.metrics[k])) for k in METRIC_KEYS})
            row["segments"] = int(r.metrics["segments"])
            rows.append(row)
    schema = pa.schema([("backend", pa.string()), ("identity", pa.string()), ("kind", pa.string()),
                        ("view", pa.string()), ("references", pa.string()), ("seconds", pa.float64())]
                       + [(k, pa.float64()) for k in METRIC_KEYS] + [("segments", pa.int64())])
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _img_tag(rgb: np.ndarray) -> str:
    data = base64.b64encode(encode_jpeg(rgb, quality=85)).decode()
    return f'<img src="data:image/jpeg;base64,{data}">'


def _fmt(value) -> str:
    return "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def render_report(metrics: dict, results: dict[str, list[PairResult]], grid_rows: list[dict]) -> str:
    backends = list(results)
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>chromaflow evaluation</title><style>",
             "body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;margin-bottom:2em}",
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:right}",
             "th{cursor:pointer;background:#eee} img{width:160px;display:block}",
             ".grid td{text-align:center;vertical-align:top}</style></head><body>",
             f"<h1>Evaluation of {esc(str(metrics['dataset']))}</h1>", "<h2>Overall</h2>",
             "<table class='sortable'><thead><tr><th>backend</th>"]
    summary_keys = list(METRIC_KEYS) + ["line_f1", "pairs"]
    parts += [f"<th>{k}</th>" for k in summary_keys] + ["<th>seconds/pair</th></tr></thead><tbody>"]
    for b in backends:
        m = metrics["backends"][b]
        seconds = float(np.mean([r.seconds for r in results[b]])) if results[b] else None
        parts.append(f"<tr><td>{esc(b)}</td>" + "".join(f"<td>{_fmt(m.get(k))}</td>" for k in summary_keys)
                     + f"<td>{_fmt(seconds)}</td></tr>")
    parts.append("</tbody></table>")
    if metrics["problems"]:
        parts.append("<h2>Problems</h2><ul>" + "".join(f"<li>{esc(p)}</li>" for p in metrics["problems"]) + "</ul>")
    parts.append("<h2>Examples</h2><table class='grid'><tr><th>pair</th><th>line</th><th>reference</th>"
                 + "".join(f"<th>{esc(b)}</th>" for b in backends) + "<th>ground truth</th></tr>")
    for row in grid_rows:
        parts.append(f"<tr><td>{esc(row['identity'])}<br>{esc(row['view'])}</td><td>{_img_tag(row['line'])}</td>"
                     f"<td>{_img_tag(row['reference'])}</td>"
                     + "".join(f"<td>{_img_tag(row['outputs'][b])}</td>" for b in backends)
                     + f"<td>{_img_tag(row['truth'])}</td></tr>")
    parts.append("</table><h2>All pairs (click a header to sort)</h2><table class='sortable'><thead><tr>"
                 "<th>backend</th><th>identity</th><th>kind</th><th>view</th><th>references</th>"
                 + "".join(f"<th>{k}</th>" for k in METRIC_KEYS) + "<th>seconds</th></tr></thead><tbody>")
    for b in backends:
        for r in results[b]:
            refs = ",".join(r.references)
            parts.append(f"<tr><td>{esc(b)}</td><td>{esc(r.identity)}</td><td>{esc(r.kind)}</td><td>{esc(r.view)}</td>"
                         f"<td>{esc(refs[:40])}</td>"
                         + "".join(f"<td>{_fmt(float(r.metrics[k]) if r.metrics[k] == r.metrics[k] else None)}</td>"
                                   for k in METRIC_KEYS)
                         + f"<td>{r.seconds:.3f}</td></tr>")
    parts.append("</tbody></table>")
    parts.append(_SORT_SCRIPT + "</body></html>")
    return "\n".join(parts)


_SORT_SCRIPT = """<script>
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
    var asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
    var rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].textContent, y = b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
</script>"""


@flow(name="evaluate")
def evaluate_flow(dataset: str, out: str, config_path: str | None = None, overrides: list[str] | None = None,
                  backends: list[str] | None = None) -> dict:
    """Prefect flow: run_evaluation plus a table artifact with one row per backend."""
    from chromaflow.tasks.evaluate import evaluate_dataset, publish_metrics_table

    config = load_config(config_path, overrides)
    metrics = evaluate_dataset(dataset, out, config, backends)
    publish_metrics_table(metrics)
    return metrics
