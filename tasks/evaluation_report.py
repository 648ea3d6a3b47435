"""The evaluation's outputs besides metrics.json: metrics.parquet (one row per backend,
variant and pair) and report.html (summary per backend and variant, an image grid, and a
sortable table of every pair with its low-confidence regions)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from chromaflow.models.evaluation import METRIC_KEYS, PairResult
from chromaflow.storage.images import encode_jpeg


def parquet_bytes(results: dict[str, dict[str, list[PairResult]]]) -> bytes:
    rows = []
    for backend, per_variant in results.items():
        for rs in per_variant.values():
            for r in rs:
                row = {"backend": backend, "style": r.style, "condition": r.condition, "identity": r.identity,
                       "kind": r.kind, "view": r.view, "references": ",".join(r.references), "framing": r.framing,
                       "seconds": r.seconds}
                row.update({k: (None if r.metrics[k] != r.metrics[k] else float(r.metrics[k])) for k in METRIC_KEYS})
                row["segments"] = int(r.metrics["segments"])
                row["low_confidence_regions"] = len(r.diagnostics.get("low_confidence", []))
                rows.append(row)
    schema = pa.schema([("backend", pa.string()), ("style", pa.string()), ("condition", pa.string()),
                        ("identity", pa.string()), ("kind", pa.string()), ("view", pa.string()),
                        ("references", pa.string()), ("framing", pa.string()), ("seconds", pa.float64())]
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
