"""Several characters per page, scored through the real stages: instance recall, identity
accuracy, color consistency and flat-color accuracy on a multi-instance layout
(`chromaflow evaluate --instances DIR`, bench/bench_instances.py; results in docs/quality.md).

Layout (chromaflow/demo_instances.py writes one from OpenMoji):

    DIR/pages/<page>_line.png        the page's line art (what is colorized)
    DIR/pages/<page>_color.png       ground truth
    DIR/pages/<page>_instances.json  [{"identity": "...", "bbox": [x0, y0, x1, y1]}, ...]
    DIR/refs/<identity>/*.png        the ID pools

The pages run through the stages (ingest, references, palette memory, lines, instances,
retrieve, colorize, upscale) as plain functions in this process, with the given config;
predictions are read back from the job's shard sets and scored with
models/instance_metrics.py and models/metrics.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from chromaflow.conf import Config
from chromaflow.models.colorizers import build_colorizer
from chromaflow.models.evaluation import sanitize
from chromaflow.models.instance_metrics import score_pages
from chromaflow.stages import colorize, ingest, instances, lines, palette_memory, references, retrieve, upscale
from chromaflow.storage.atomic import write_json
from chromaflow.storage.eval_dataset import EvalDatasetError
from chromaflow.storage.images import decode_image, decode_png
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import read_shard
from chromaflow.storage.sources import natural_key


def scan_layout(root: Path, problems: list[str]) -> list[dict]:
    """The pages of a multi-instance layout, in natural order: {name, line, color, truth}."""
    pages = []
    for line in sorted((root / "pages").glob("*_line.png"), key=lambda p: natural_key(p.name)):
        name = line.name[: -len("_line.png")]
        color, truth = line.with_name(f"{name}_color.png"), line.with_name(f"{name}_instances.json")
        if not color.exists() or not truth.exists():
            problems.append(f"{line}: no {color.name} or {truth.name}; page skipped")
            continue
        pages.append({"name": name, "line": line, "color": color,
                      "truth": json.loads(truth.read_text(encoding="utf-8"))})
    if not pages:
        raise EvalDatasetError(f"{root / 'pages'}: no <page>_line.png with its _color.png and _instances.json")
    return pages


def run_stages(chapter: Path, refs: Path, out: Path, config: Config) -> JobDir:
    """The colorize DAG's stages as plain functions, one process, no Prefect or Ray."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    job = JobDir(out, "bench")
    job.write_info({"name": "bench", "kind": "chapter", "source": str(chapter), "refs": str(refs),
                    "config": config.model_dump(mode="json")})
    summary = ingest.run(job, chapter, config)
    references.run(job, str(refs), config)
    palette_memory.run(job, config)
    colorizer = build_colorizer(config)
    for shard in range(summary.num_shards):
        for stage in (lines, instances, retrieve):
            stage.run(job, shard, config)
        colorize.run(job, shard, config, colorizer)
        upscale.run(job, shard, config)
    return job


def predictions(job: JobDir) -> dict[str, dict]:
    """{source file name: {"output": final RGB, "instances": [(box in page pixels, identity)]}}."""
    out = {}
    for shard in range(job.num_shards()):
        retrieved = {s["__key__"]: json.loads(s["json"]) for s in read_shard(job.shard_path("retrieve", shard))}
        sizes = {s["__key__"]: json.loads(s["json"])["size"] for s in read_shard(job.shard_path("instances", shard))}
        for sample in read_shard(job.shard_path("upscale", shard)):
            meta, key = json.loads(sample["json"]), sample["__key__"]
            final = decode_png(sample["png"])
            scale = final.shape[1] / sizes[key][0]  # instance boxes are at the work size
            out[Path(meta["source"]).name] = {"output": final, "instances": [
                ([round(v * scale) for v in i["box"]], i["identity"]) for i in retrieved[key].get("instances", [])]}
    return out


def score(pages: list[dict], predicted: dict[str, dict], problems: list[str]) -> dict:
    """Decode each page's ground truth and score it (models/instance_metrics.score_pages)."""
    scored = []
    for page in pages:
        pred = predicted.get(page["line"].name)
        if pred is None:
            problems.append(f"{page['line']}: no output (failed in the pipeline)")
            continue
        scored.append({"name": page["name"], "truth": page["truth"], **pred,
                       "line": decode_image(page["line"].read_bytes(), str(page["line"])),
                       "color": decode_image(page["color"].read_bytes(), str(page["color"]))})
    return score_pages(scored)


def evaluate_layout(dataset: str | Path, out: str | Path, config: Config, problems: list[str] | None = None) -> dict:
    """Run and score one layout; writes out/metrics.json. Unusable pages go to `problems`."""
    problems = [] if problems is None else problems
    dataset, out = Path(dataset), Path(out)
    pages = scan_layout(dataset, problems)
    chapter = out / "chapter"
    chapter.mkdir(parents=True, exist_ok=True)
    for page in pages:
        shutil.copyfile(page["line"], chapter / page["line"].name)
    started = time.perf_counter()
    job = run_stages(chapter, dataset / "refs", out / "job", config)
    metrics = {**score(pages, predictions(job), problems), "seconds": round(time.perf_counter() - started, 1),
               "backend": config.instances.backend}
    write_json(out / "metrics.json", sanitize(metrics))
    return metrics
