"""Quality on the demo chapter's pages (docs/quality.md, issue 9): the chapter `make demo`
colors, as line art and rendered gray and screentoned (models/eval_variants.py, the same
renderings as `chromaflow evaluate --styles`), run through the shard stages as plain
functions (ingest, lines, instances, retrieval, colorize, upscale; no Prefect or Ray), each
final page scored against the same page rendered in color (chromaflow/demo.py
`demo_pages(line_art=False)`).

    python bench/bench_demo_quality.py [--styles line,gray,tone] [--out /tmp/cf-demo-quality]

Prints one JSON line per style: page-mean foreground flat-color accuracy, background
accuracy, segment accuracy, and per page.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    from chromaflow.conf import load_config
    from chromaflow.demo import build_demo, demo_pages
    from chromaflow.flows.colorize import prepare_job
    from chromaflow.models.colorizers import build_colorizer
    from chromaflow.models.eval_variants import make_case
    from chromaflow.models.metrics import pair_metrics
    from chromaflow.stages import colorize, ingest, instances, lines, palette_memory, references, retrieve, upscale
    from chromaflow.storage.images import decode_png
    from chromaflow.storage.shards import read_shard

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", default="line,gray,tone")
    parser.add_argument("--out", type=Path, default=Path("/tmp/cf-demo-quality"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    _, refs = build_demo(args.out / "demo")
    line_pages = dict(demo_pages(line_art=True))
    truths = dict(demo_pages(line_art=False))
    config = load_config(None, [])
    colorizer = build_colorizer(config)
    for style in args.styles.split(","):
        chapter = args.out / style / "chapter"
        chapter.mkdir(parents=True)
        cases = {}
        for name, line in line_pages.items():
            cases[name] = make_case(f"demo/{name}", style, "plain", line, truths[name], [])
            Image.fromarray(cases[name].page).save(chapter / name)
        job = prepare_job(str(chapter), str(refs), str(args.out / style / "job"), config, "chapter")
        ingest.run(job, chapter, config)
        references.run(job, str(refs), config)
        palette_memory.run(job, config)
        for shard in range(job.num_shards()):
            for stage in (lines, instances, retrieve):
                stage.run(job, shard, config)
            colorize.run(job, shard, config, colorizer)
            upscale.run(job, shard, config)
        finals = {json.loads(s["json"])["source"]: decode_png(s["png"])
                  for shard in range(job.num_shards()) for s in read_shard(job.shard_path("upscale", shard))}
        per_page = {name: pair_metrics(finals[name], case.truth, case.true_lines) for name, case in cases.items()}
        keys = ("flat_color_accuracy", "background_accuracy", "segment_accuracy")
        print(json.dumps({"style": style, "pages": len(per_page),
                          **{k: round(float(np.mean([m[k] for m in per_page.values()])), 3) for k in keys},
                          "per_page": {n: {k: round(m[k], 3) for k in keys} for n, m in per_page.items()}}), flush=True)


if __name__ == "__main__":
    main()
