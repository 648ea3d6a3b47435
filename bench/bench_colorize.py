"""Speed of the weight-free `region` colorizer on one core: segmentation + matching + fill.

    OMP_NUM_THREADS=1 python bench/bench_colorize.py [--repeat 5] [--refs 3]

Pages are 1200 x 1700 (a manga page at 1024-2048 px work sizes). Two inputs:
- `synthetic`: a generated page of ~60 shapes (many regions, some strokes with gaps) and
  colored references of the same layout at other scales/positions;
- `basicpbc`: a real production frame (../shared/data/dev/basicpbc/laughing_girl, line frame
  0001, keyframe 0000 as the reference), padded/scaled to 1200 x 1700, if present.
Prints the median seconds per stage and in total; target: total <= 1 s.
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
    from chromaflow.models.lines import extract_lines
    from chromaflow.models.colorizers.base import Reference

    page = synthetic_page(7)
    refs = [synthetic_page(7, shift=(15 * i, -10 * i), scale=1.0 - 0.05 * i, colored=True) for i in range(n_refs)]
    yield "synthetic", page, [Reference("", f"r{i}", r, extract_lines(r).lines, 1.0) for i, r in enumerate(refs)]
    clip = Path(__file__).resolve().parents[2] / "shared/data/dev/basicpbc/laughing_girl"
    if clip.is_dir():
        from chromaflow.storage.images import decode_image

        load = lambda p: decode_image(p.read_bytes(), str(p))  # noqa: E731
        page = fit_page(load(clip / "line/0001.png"))
        key = fit_page(load(clip / "gt/0000.png"))
        key_lines = extract_lines(fit_page(load(clip / "line/0000.png"))).lines
        yield "basicpbc", page, [Reference("", "key", key, key_lines, 1.0)] * n_refs


def bench(name, page, refs, repeat: int) -> dict:
    from chromaflow.models.colorizers.base import ColorizeRequest
    from chromaflow.models.colorizers.region import RegionColorizer
    from chromaflow.models.lines import extract_lines

    art = extract_lines(page)
    colorizer = RegionColorizer()
    times = {"segmentation": [], "matching": [], "fill": [], "total": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        seg = colorizer.segment(art.lines)
        t1 = time.perf_counter()
        palette, fill_index, decided = colorizer.fill_regions(seg, refs)
        t2 = time.perf_counter()
        colorizer._composite(page, seg, palette, fill_index, decided, art.kind)
        t3 = time.perf_counter()
        times["segmentation"].append(t1 - t0)
        times["matching"].append(t2 - t1)
        times["fill"].append(t3 - t2)
        times["total"].append(t3 - t0)
    # The public entry point does exactly these three steps; check it agrees.
    colorizer.colorize(ColorizeRequest("bench", page, art.lines, art.kind, refs))
    return {"case": name, "size": f"{PAGE_W}x{PAGE_H}", "refs": len(refs), "regions": int(seg.count - 1),
            **{k: round(statistics.median(v), 3) for k, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--refs", type=int, default=3)
    args = parser.parse_args()
    single_core()
    for name, page, refs in cases(args.refs):
        print(json.dumps(bench(name, page, refs, args.repeat)))


if __name__ == "__main__":
    main()
