"""Several characters per page: instance recall, identity accuracy, color consistency and
flat-color accuracy of the pipeline on a multi-instance layout (results in docs/quality.md).

    python bench/bench_instances.py DATASET --out DIR [--set key=value ...] [--single]
    python bench/bench_instances.py --build DATASET [--pages 24] [--seed 0]   # the OpenMoji dev chapter

Layout (chromaflow/demo_instances.py writes it):

    DATASET/pages/<page>_line.png        the page's line art (what is colorized)
    DATASET/pages/<page>_color.png       ground truth
    DATASET/pages/<page>_instances.json  [{"identity": "...", "bbox": [x0, y0, x1, y1]}, ...]
    DATASET/refs/<identity>/*.png        the ID pools
    DATASET/single/...                   optional: the same layout, one character per page

The pages run through the real stages (ingest, references, palette memory, lines,
instances, retrieve, colorize, upscale) as plain functions in this process, with the
given config; predictions are read back from the job's shard sets and scored with
models/instance_metrics.py and models/metrics.py. `--single` also runs DATASET/single and
reports the multi-character pages' flat-color accuracy next to the same characters alone.
Writes DIR/metrics.json (and DIR/single/metrics.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def scan_layout(root: Path) -> list[dict]:
    """The pages of a multi-instance layout, in natural order: {name, line, color, truth}."""
    from chromaflow.storage.sources import natural_key

    pages = []
    for line in sorted((root / "pages").glob("*_line.png"), key=lambda p: natural_key(p.name)):
        name = line.name[: -len("_line.png")]
        color, truth = line.with_name(f"{name}_color.png"), line.with_name(f"{name}_instances.json")
        if not color.exists() or not truth.exists():
            print(f"{line}: no {color.name} or {truth.name}; page skipped", file=sys.stderr)
            continue
        pages.append({"name": name, "line": line, "color": color,
                      "truth": json.loads(truth.read_text(encoding="utf-8"))})
    if not pages:
        raise SystemExit(f"{root / 'pages'}: no <page>_line.png with its _color.png and _instances.json")
    return pages


def run_stages(chapter: Path, refs: Path, out: Path, config) -> "JobDir":
    """The colorize DAG's stages as plain functions, one process, no Prefect or Ray."""
    from chromaflow.models.colorizers import build_colorizer
    from chromaflow.stages import colorize, ingest, instances, lines, palette_memory, references, retrieve, upscale
    from chromaflow.storage.job import JobDir

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


def predictions(job) -> dict[str, dict]:
    """{source file name: {"output": final RGB, "instances": [(box in page pixels, identity)]}}."""
    from chromaflow.storage.images import decode_png
    from chromaflow.storage.shards import read_shard

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


def score(pages: list[dict], predicted: dict[str, dict]) -> dict:
    """Decode each page's ground truth and score it (models/instance_metrics.score_pages)."""
    from chromaflow.models.instance_metrics import score_pages
    from chromaflow.storage.images import decode_image

    scored = []
    for page in pages:
        pred = predicted.get(page["line"].name)
        if pred is None:
            print(f"{page['line']}: no output (failed in the pipeline)", file=sys.stderr)
            continue
        scored.append({"name": page["name"], "truth": page["truth"], **pred,
                       "line": decode_image(page["line"].read_bytes(), str(page["line"])),
                       "color": decode_image(page["color"].read_bytes(), str(page["color"]))})
    return score_pages(scored)


def evaluate_layout(dataset: Path, out: Path, config) -> dict:
    """Run and score one layout; writes out/metrics.json."""
    pages = scan_layout(dataset)
    chapter = out / "chapter"
    chapter.mkdir(parents=True, exist_ok=True)
    for page in pages:
        shutil.copyfile(page["line"], chapter / page["line"].name)
    started = time.perf_counter()
    job = run_stages(chapter, dataset / "refs", out / "job", config)
    metrics = {**score(pages, predictions(job)), "seconds": round(time.perf_counter() - started, 1),
               "backend": config.instances.backend}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, default=Path("/tmp/chromaflow-instances"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--single", action="store_true", help="also score DATASET/single (one character per page)")
    parser.add_argument("--build", action="store_true", help="build the OpenMoji dev chapter at DATASET and exit")
    parser.add_argument("--pages", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.build:
        from chromaflow.demo_instances import build_multi_character_chapter

        build_multi_character_chapter(args.dataset, num_pages=args.pages, seed=args.seed)
        return
    from chromaflow.conf import load_config

    config = load_config(overrides=args.overrides)
    keys = ("instance_recall", "instance_identity_accuracy", "instance_precision", "flat_color_accuracy",
            "consistency_de_median", "consistency_de_p90", "seconds")
    metrics = evaluate_layout(args.dataset, args.out, config)
    print(json.dumps({k: metrics[k] for k in keys}, indent=1))
    if args.single:
        single = evaluate_layout(args.dataset / "single", args.out / "single", config)
        print("single-character pages:", json.dumps({k: single[k] for k in keys}, indent=1))
        print(f"flat-color accuracy multi - single: {metrics['flat_color_accuracy'] - single['flat_color_accuracy']:+.4f}")


if __name__ == "__main__":
    main()
