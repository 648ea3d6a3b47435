"""Evaluation flow: score colorizer backends on a dataset of (line, color) views.

`run_evaluation` is the plain function (the CLI's `chromaflow evaluate` and the tests call
it); `evaluate_flow` is the Prefect flow around it that also publishes a table artifact.
Outputs, written atomically into `out`:
- metrics.json     {"backends": {NAME: {overall metrics, "line_f1", "pairs", "identities": {...}}},
                    "kinds": {NAME: {"pose": {...}, "recolor": {...}}}, "problems": [...], ...}
                   for the first variant, and "variants": {NAME: {"STYLE/CONDITION": {same + "kinds"}}}
- metrics.parquet  one row per (backend, variant, pair)
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
    METRIC_KEYS, PairResult, Variants, aggregate, aggregate_kinds, check_backends, default_backends, evaluate_case,
    load_identity_views, make_pairs, pair_case, sanitize, thumbnail)
from chromaflow.storage.atomic import write_bytes, write_json
from chromaflow.storage.eval_dataset import scan_eval_dataset
from chromaflow.storage.images import encode_jpeg

log = logging.getLogger(__name__)

REPORT_MAX_ROWS_PER_IDENTITY = 6  # grid rows per identity; the table lists every pair


def run_evaluation(dataset: str | Path, out: str | Path, config: Config, backends: list[str] | None = None,
                   variants: Variants | None = None) -> dict:
    """Evaluate `backends` (default: the configured one plus the baselines) on `dataset`
    in every case of `variants` (default: line art as it is); write metrics.json,
    metrics.parquet and report.html into `out`; return the metrics dict."""
    out = Path(out)
    variants = variants or Variants()
    backends = list(dict.fromkeys(backends)) if backends else default_backends(config)
    check_backends(backends)
    data = scan_eval_dataset(dataset)
    problems = list(data.problems)
    names = variants.names()
    results: dict[str, dict[str, list[PairResult]]] = {b: {v: [] for v in names} for b in backends}
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
            for v, name in enumerate(names):
                style, condition = name.split("/")
                case = pair_case(pair, style, condition)
                row = {"identity": identity.name, "view": pair.target.view.name, "variant": name,
                       "line": thumbnail(case.page), "reference": thumbnail(case.references[0]),
                       "truth": thumbnail(case.truth), "outputs": {}}
                for backend in backends:
                    result = evaluate_case(pair, case, style, condition, backend, config)
                    results[backend][name].append(result)
                    row["outputs"][backend] = thumbnail(result.output)
                if n < (REPORT_MAX_ROWS_PER_IDENTITY if v == 0 else 1):
                    grid_rows.append(row)
    if not any(rs for per_variant in results.values() for rs in per_variant.values()):
        problems.append(f"{dataset}: no evaluable pairs (every identity needs two readable views)")
    # Identity retrieval (issue 4): line art of view i against every identity's colored
    # views without view i; needs two identities to mean anything.
    retrieval = {}
    if len(data.identities) >= 2:
        from chromaflow.retrieval.evaluation import retrieval_topk_accuracy

        retrieval = retrieval_topk_accuracy(dataset, config)
    mean_f1 = float(np.mean(line_f1)) if line_f1 else float("nan")
    mean_f1_gray = float(np.mean(line_f1_gray)) if line_f1_gray else float("nan")
    first = names[0]
    metrics = sanitize({
        "dataset": str(dataset),
        # The first variant (line/plain unless --styles says otherwise), as before variants.
        "variant": first,
        "backends": {b: aggregate(rs[first], mean_f1, mean_f1_gray) for b, rs in results.items()},
        "kinds": {b: aggregate_kinds(rs[first]) for b, rs in results.items()},
        "variants": {b: {name: {**aggregate(rs[name], mean_f1, mean_f1_gray), "kinds": aggregate_kinds(rs[name])}
                         for name in names} for b, rs in results.items()},
        **{k: retrieval[k] for k in ("retrieval_top1", "retrieval_top3") if k in retrieval},
        "problems": problems,
        "config_hash": config.section_hash("lines", "colorize"),
    })
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / "metrics.parquet", _parquet_bytes(results))
    write_bytes(out / "report.html", render_report(metrics, results, grid_rows).encode("utf-8"))
    write_json(out / "metrics.json", metrics)  # last: its presence means the run completed
    return metrics


def _parquet_bytes(results: dict[str, dict[str, list[PairResult]]]) -> bytes:
    rows = []
    for backend, per_variant in results.items():
        for rs in per_variant.values():
            for r in rs:
                row = {"backend": backend, "style": r.style, "condition": r.condition, "identity": r.identity,
                       "kind": r.kind, "view": r.view, "references": ",".join(r.references), "seconds": r.seconds}
                row.update({k: (None if r.metrics[k] != r.metrics[k] else float(r.metrics[k])) for k in METRIC_KEYS})
                row["segments"] = int(r.metrics["segments"])
                row["low_confidence_regions"] = len(r.diagnostics.get("low_confidence", []))
                rows.append(row)
    schema = pa.schema([("backend", pa.string()), ("style", pa.string()), ("condition", pa.string()),
                        ("identity", pa.string()), ("kind", pa.string()), ("view", pa.string()),
                        ("references", pa.string()), ("seconds", pa.float64())]
                       + [(k, pa.float64()) for k in METRIC_KEYS]
                       + [("segments", pa.int64()), ("low_confidence_regions", pa.int64())])
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _img_tag(rgb: np.ndarray) -> str:
    data = base64.b64encode(encode_jpeg(rgb, quality=85)).decode()
    return f'<img src="data:image/jpeg;base64,{data}">'


def _fmt(value) -> str:
    return "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def _summary_table(metrics: dict, results: dict[str, dict[str, list[PairResult]]]) -> list[str]:
    """One row per (backend, variant)."""
    esc = html.escape
    summary_keys = list(METRIC_KEYS) + ["line_f1", "pairs"]
    parts = ["<table class='sortable'><thead><tr><th>backend</th><th>variant</th>"]
    parts += [f"<th>{k}</th>" for k in summary_keys] + ["<th>seconds/pair</th></tr></thead><tbody>"]
    for b, per_variant in results.items():
        for name, rs in per_variant.items():
            m = metrics["variants"][b][name]
            seconds = float(np.mean([r.seconds for r in rs])) if rs else None
            parts.append(f"<tr><td>{esc(b)}</td><td>{esc(name)}</td>"
                         + "".join(f"<td>{_fmt(m.get(k))}</td>" for k in summary_keys) + f"<td>{_fmt(seconds)}</td></tr>")
    parts.append("</tbody></table>")
    return parts


def render_report(metrics: dict, results: dict[str, dict[str, list[PairResult]]], grid_rows: list[dict]) -> str:
    backends = list(results)
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>chromaflow evaluation</title><style>",
             "body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;margin-bottom:2em}",
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:right}",
             "th{cursor:pointer;background:#eee} img{width:160px;display:block}",
             ".grid td{text-align:center;vertical-align:top}</style></head><body>",
             f"<h1>Evaluation of {esc(str(metrics['dataset']))}</h1>", "<h2>Overall</h2>"]
    parts += _summary_table(metrics, results)
    if metrics["problems"]:
        parts.append("<h2>Problems</h2><ul>" + "".join(f"<li>{esc(p)}</li>" for p in metrics["problems"]) + "</ul>")
    parts.append("<h2>Examples</h2><table class='grid'><tr><th>pair</th><th>page</th><th>reference</th>"
                 + "".join(f"<th>{esc(b)}</th>" for b in backends) + "<th>ground truth</th></tr>")
    for row in grid_rows:
        parts.append(f"<tr><td>{esc(row['identity'])}<br>{esc(row['view'])}<br>{esc(row['variant'])}</td>"
                     f"<td>{_img_tag(row['line'])}</td><td>{_img_tag(row['reference'])}</td>"
                     + "".join(f"<td>{_img_tag(row['outputs'][b])}</td>" for b in backends)
                     + f"<td>{_img_tag(row['truth'])}</td></tr>")
    parts.append("</table><h2>All pairs (click a header to sort)</h2><table class='sortable'><thead><tr>"
                 "<th>backend</th><th>variant</th><th>identity</th><th>kind</th><th>view</th><th>references</th>"
                 + "".join(f"<th>{k}</th>" for k in METRIC_KEYS) + "<th>low-confidence regions</th>"
                 "<th>seconds</th></tr></thead><tbody>")
    for b in backends:
        for rs in results[b].values():
            for r in rs:
                refs = ",".join(r.references)
                parts.append(f"<tr><td>{esc(b)}</td><td>{esc(r.variant)}</td><td>{esc(r.identity)}</td>"
                             f"<td>{esc(r.kind)}</td><td>{esc(r.view)}</td><td>{esc(refs[:40])}</td>"
                             + "".join(f"<td>{_fmt(float(r.metrics[k]) if r.metrics[k] == r.metrics[k] else None)}</td>"
                                       for k in METRIC_KEYS)
                             + f"<td>{len(r.diagnostics.get('low_confidence', []))}</td><td>{r.seconds:.3f}</td></tr>")
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
                  backends: list[str] | None = None, styles: list[str] | None = None,
                  conditions: list[str] | None = None) -> dict:
    """Prefect flow: run_evaluation plus a table artifact with one row per backend.
    `styles` (line, gray, tone) and `conditions` (plain, warp, framing, balloons) pick the
    evaluated cases (models/eval_variants.py); default: line art, plain."""
    from chromaflow.tasks.evaluate import evaluate_dataset, publish_metrics_table

    config = load_config(config_path, overrides)
    variants = Variants(tuple(styles or ("line",)), tuple(conditions or ("plain",)))
    metrics = evaluate_dataset(dataset, out, config, backends, variants)
    publish_metrics_table(metrics)
    return metrics
