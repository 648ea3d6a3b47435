"""Speed of the weight-free `region` colorizer on one core, per page style: line extraction
(style detection and descreening included) + segmentation + matching + fill.

    taskset -c 0 python bench/bench_colorize.py [--repeat 5] [--refs 3] [--work-size 1024]

Pages are 1200 x 1700 (a manga page). As in the pipeline, the page is first scaled to
`colorize.work_size` (default 1024; pass --work-size 1700 to run at full size), then:
`lines` = extract_lines (classification, descreening, XDoG), then the colorizer's steps,
which get a tone page's descreened gray from line extraction as the pipeline's colorize
stage gets it from the lines shard (nothing else is shared between the two).
Inputs:
- `synthetic-{line,gray,tone}`: a generated page of ~60 shapes (many regions, some strokes
  with gaps) as line art, as a gray page and as a screentoned, scanned page
  (models/synth_screens.py), with colored references of the same layout at other
  scales/positions;
- `basicpbc`: a real production frame (../shared/data/dev/basicpbc/laughing_girl, line frame
  0001, keyframe 0000 as the reference), padded/scaled to 1200 x 1700, if present.
Prints one JSON line per case with the median wall seconds per step and the median CPU
seconds of the whole page (`total_cpu`, what one core spends even on a shared machine);
target: total <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

PAGE_W, PAGE_H = 1200, 1700


def single_core() -> None:
    cv2.setNumThreads(1)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def synthetic_page(seed: int, shift=(0, 0), scale=1.0, colored=False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((PAGE_H, PAGE_W, 3), 255, np.uint8)
    cv2.rectangle(img, (20, 20), (PAGE_W - 21, PAGE_H - 21), (0, 0, 0), 4)  # panel border
    cx, cy = PAGE_W / 2, PAGE_H / 2
    for _ in range(60):
        x, y = rng.uniform(80, PAGE_W - 80), rng.uniform(80, PAGE_H - 80)
        r = rng.uniform(20, 110)
        color = tuple(int(c) for c in rng.integers(40, 250, 3))
        x = (x - cx) * scale + cx + shift[0]
        y = (y - cy) * scale + cy + shift[1]
        r *= scale
        if rng.random() < 0.5:
            shape = dict(center=(int(x), int(y)), radius=int(r))
            if colored:
                cv2.circle(img, color=color, thickness=-1, **shape)
            cv2.circle(img, color=(0, 0, 0), thickness=3, lineType=cv2.LINE_AA, **shape)
        else:
            p0, p1 = (int(x - r), int(y - r * 0.6)), (int(x + r), int(y + r * 0.6))
            if colored:
                cv2.rectangle(img, p0, p1, color, -1)
            cv2.rectangle(img, p0, p1, (0, 0, 0), 3)
    return img


def fit_page(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(PAGE_W / w, PAGE_H / h)
    small = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_NEAREST)
    out = np.full((PAGE_H, PAGE_W, 3), 255, np.uint8)
    y0, x0 = (PAGE_H - small.shape[0]) // 2, (PAGE_W - small.shape[1]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return out


def cases(n_refs: int):
    from chromaflow.models.colorizers.base import Reference
    from chromaflow.models.lines import extract_lines
    from chromaflow.models.synth_screens import gray_page, scan_degrade, tone_page

    refs = [synthetic_page(7, shift=(15 * i, -10 * i), scale=1.0 - 0.05 * i, colored=True) for i in range(n_refs)]
    refs = [Reference("", f"r{i}", r, extract_lines(r).lines, 1.0) for i, r in enumerate(refs)]
    colored = synthetic_page(7, colored=True)
    rng = np.random.default_rng(0)
    toned, _ = tone_page(colored, rng)
    yield "synthetic-line", synthetic_page(7), refs
    yield "synthetic-gray", gray_page(colored), refs
    yield "synthetic-tone", scan_degrade(toned, rng)[0], refs
    clip = Path(__file__).resolve().parents[2] / "shared/data/dev/basicpbc/laughing_girl"
    if clip.is_dir():
        from chromaflow.storage.images import decode_image

        load = lambda p: decode_image(p.read_bytes(), str(p))  # noqa: E731
        page = fit_page(load(clip / "line/0001.png"))
        key = fit_page(load(clip / "gt/0000.png"))
        key_lines = extract_lines(fit_page(load(clip / "line/0000.png"))).lines
        yield "basicpbc", page, [Reference("", "key", key, key_lines, 1.0)] * n_refs


def bench(name, page, refs, repeat: int, work_size: int) -> dict:
    from chromaflow.conf import Config
    from chromaflow.models.colorizers.base import ColorizeRequest
    from chromaflow.models.colorizers.region import RegionColorizer
    from chromaflow.models.lines import extract_lines
    from chromaflow.storage.images import resize_longest

    config = Config()
    config.colorize.work_size = work_size
    page = resize_longest(page, work_size)
    refs = [type(r)(r.identity, r.name, resize_longest(r.color, work_size),
                    resize_longest(r.lines, work_size), r.score) for r in refs]
    colorizer = RegionColorizer.from_config(config)
    times = {"lines": [], "colorize": [], "total": [], "total_cpu": []}
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        art = extract_lines(page, config.lines)
        t1 = time.perf_counter()
        # As in the pipeline: the colorizer gets a tone page's gray from line extraction.
        request = ColorizeRequest("bench", page, art.lines, art.kind, refs, tone=art.tone)
        out = colorizer.colorize(request)
        c2, t2 = time.process_time(), time.perf_counter()
        times["lines"].append(t1 - t0)
        times["colorize"].append(t2 - t1)
        times["total"].append(t2 - t0)
        # CPU seconds of this process: what one core spends, even when the machine is shared.
        times["total_cpu"].append(c2 - c0)
    assert out.shape == page.shape
    return {"case": name, "size": f"{page.shape[1]}x{page.shape[0]}", "style": art.kind, "refs": len(refs),
            "regions": request.diagnostics.get("regions"),
            **{k: round(statistics.median(v), 3) for k, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--refs", type=int, default=3)
    parser.add_argument("--work-size", type=int, default=1024, help="colorize.work_size (1700: full page)")
    args = parser.parse_args()
    single_core()
    for name, page, refs in cases(args.refs):
        print(json.dumps(bench(name, page, refs, args.repeat, args.work_size)), flush=True)


if __name__ == "__main__":
    main()
