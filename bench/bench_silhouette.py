"""Speed of the weight-free instance segmenter (the `instances` stage's per-page work).

    taskset -c 0 python bench/bench_silhouette.py DATASET [--work-size 1024] [--repeat 3]

DATASET is a multi-instance layout (bench/bench_instances.py; `pages/*_line.png`, the dev
chapter's pages are 1200 x 1700). Per page, untimed: the lines stage's output at the
work size (what the instances stage reads). Timed: what the instances stage does per
page — the silhouette segmenter, the label map and its PNG/JSON sample. Prints the median
and 90th percentile over pages of each page's median over `--repeat` runs, wall time and
the process's CPU time; run it pinned to one core (`taskset -c 0`), the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--work-size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import cv2

    from chromaflow.conf import load_config
    from chromaflow.models.instances.silhouette import SilhouetteSegmenter
    from chromaflow.models.lines import extract_lines
    from chromaflow.stages.instances import instance_sample
    from chromaflow.storage.images import decode_image, resize_longest

    cv2.setNumThreads(1)
    config = load_config(overrides=[f"colorize.work_size={args.work_size}"])
    segmenter = SilhouetteSegmenter.from_config(config)
    per_page, per_page_cpu, sizes, counts = [], [], set(), []
    for path in sorted((args.dataset / "pages").glob("*_line.png")):
        rgb = decode_image(path.read_bytes(), str(path))
        sizes.add(rgb.shape[:2])
        page = resize_longest(rgb, args.work_size)
        lines = extract_lines(page, config.lines).lines
        runs, cpu = [], []
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            instances = segmenter.segment(lines, page)
            instance_sample(lines.shape, instances, "silhouette")
            runs.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        per_page.append(float(np.median(runs)))
        per_page_cpu.append(float(np.median(cpu)))
        counts.append(len(instances))
    print(f"{len(per_page)} pages of {sorted(sizes)} (h, w), work size {args.work_size}, "
          f"{np.mean(counts):.2f} instances per page")
    print(f"wall seconds per page: median {np.median(per_page):.3f}, p90 {np.percentile(per_page, 90):.3f}, "
          f"max {max(per_page):.3f}")
    # CPU time of this process: what the page costs one core, less sensitive to a busy machine.
    print(f"CPU seconds per page: median {np.median(per_page_cpu):.3f}, p90 {np.percentile(per_page_cpu, 90):.3f}")


if __name__ == "__main__":
    main()
