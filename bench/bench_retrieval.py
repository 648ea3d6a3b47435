"""Retrieval benchmarks: FAISS index build/search at scale, descriptor throughput.

    python bench/bench_retrieval.py faiss --n 1000000 --dim 512 --data gaussian --threads 2
    python bench/bench_retrieval.py faiss --n 1000000 --dim 512 --data clustered --threads 2
    python bench/bench_retrieval.py descriptor --patches 400
    python bench/bench_retrieval.py identity --dataset ../shared/data/dev/openmoji
    python bench/bench_retrieval.py store --dataset ../shared/data/dev/openmoji

`faiss` builds the index kinds the store would use (retrieval/index.py, with config
defaults unless overridden), measures build time, resident memory added by the index, and
for a sweep of search parameters: batched query latency (one `search` call over all
queries, divided by their number) and recall@10 against exact search (IndexFlatIP).

Data: `gaussian` = i.i.d. normal vectors, L2-normalised (the hardest case: no structure,
all distances alike); `clustered` = a mixture of 4096 Gaussian clusters in 512-d
(closer to real image embeddings). Queries are fresh draws from the same distribution.
Prints one JSON line per measurement and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_data(kind: str, n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    if kind == "clustered":
        centres = rng.standard_normal((4096, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = rng.standard_normal((m, dim), dtype=np.float32)
        if kind == "clustered":
            block = centres[rng.integers(0, len(centres), m)] + 0.5 * block
        out[start:start + m] = block
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth))
    return hits / (k * len(truth))


def timed_search(index, queries, k):
    """Wall and CPU milliseconds per query (batched). On a shared machine the CPU time
    divided by the thread count estimates the uncontended wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    _, ids = index.search(queries, k)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall / len(queries) * 1000, cpu / len(queries) * 1000, ids


def bench_faiss(args) -> list[dict]:
    import faiss

    from chromaflow.conf import load_config
    from chromaflow.retrieval.index import build_index

    faiss.omp_set_num_threads(args.threads)
    base_cfg = load_config().retrieval  # read once: settings below are explicit
    rows = []
    t0 = time.perf_counter()
    # One draw, split: queries come from the same distribution (same clusters) as the data.
    data = make_data(args.data, args.n + args.queries, args.dim, seed=0)
    queries = np.ascontiguousarray(data[args.n:])
    data = data[:args.n]
    print(f"# data {args.data} {data.shape} generated in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    base = rss_bytes()
    t0 = time.perf_counter()
    flat = build_index(data, base_cfg.model_copy(update={"index": "flat"}))
    build_s = time.perf_counter() - t0
    mem = rss_bytes() - base
    ms, cpu_ms, truth = timed_search(flat, queries, args.k)
    rows.append({"index": "flat", "param": "-", "build_s": round(build_s, 2), "memory_mb": round(mem / 2**20),
                 "ms_per_query": round(ms, 3), "cpu_ms_per_query": round(cpu_ms, 3), f"recall@{args.k}": 1.0,
                 "load": round(os.getloadavg()[0], 1)})
    print(json.dumps(rows[-1]), flush=True)
    del flat

    for kind in args.kinds:
        cfg = base_cfg.model_copy(update={"index": kind, "hnsw_m": args.hnsw_m,
                                          "hnsw_ef_construction": args.ef_construction,
                                          "pq_m": args.pq_m or None, "ivf_nlist": args.nlist or None})
        base = rss_bytes()
        t0 = time.perf_counter()
        index = build_index(data, cfg)
        build_s = time.perf_counter() - t0
        mem = rss_bytes() - base
        sweep = {"hnsw": args.ef, "ivf": args.nprobe, "pq": args.refine}[kind]
        for value in sweep:
            if kind == "hnsw":
                index.hnsw.efSearch = value
                label = f"M={args.hnsw_m} efC={args.ef_construction} efSearch={value}"
            elif kind == "pq":
                refine = faiss.downcast_index(index)
                refine.k_factor = value
                label = f"PQ{faiss.downcast_index(refine.base_index).pq.M}x4fs,RFlat refine={value}"
            else:
                index.nprobe = value
                label = f"nlist={index.nlist} nprobe={value}"
            ms, cpu_ms, found = timed_search(index, queries, args.k)
            rows.append({"index": kind, "param": label, "build_s": round(build_s, 2),
                         "memory_mb": round(mem / 2**20), "ms_per_query": round(ms, 3),
                         "cpu_ms_per_query": round(cpu_ms, 3),
                         f"recall@{args.k}": round(recall_at(found, truth, args.k), 4),
                         "load": round(os.getloadavg()[0], 1)})
            print(json.dumps(rows[-1]), flush=True)
        del index
    return rows


def bench_descriptor(args) -> list[dict]:
    import cv2

    from chromaflow.retrieval.descriptor import EdgeHistogramEmbedder

    rng = np.random.default_rng(0)
    patches = []
    for _ in range(args.patches):
        img = np.full((384, 384), 255, np.uint8)
        for _ in range(12):
            p, q = rng.integers(0, 384, 2), rng.integers(0, 384, 2)
            cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), 0, int(rng.integers(1, 5)))
        patches.append(img)
    cv2.setNumThreads(args.threads)
    rows = []
    for work_size in args.work_sizes:
        embedder = EdgeHistogramEmbedder(work_size)
        embedder.embed(patches[:5])
        t0 = time.perf_counter()
        embedder.embed(patches)
        sec = time.perf_counter() - t0
        rows.append({"work_size": work_size, "dim": embedder.dim, "patches": len(patches),
                     "patches_per_s": round(len(patches) / sec, 1), "ms_per_patch": round(sec / len(patches) * 1000, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_identity(args) -> list[dict]:
    from chromaflow.conf import load_config
    from chromaflow.retrieval.evaluation import retrieval_topk_accuracy

    t0 = time.perf_counter()
    metrics = retrieval_topk_accuracy(args.dataset, load_config(overrides=args.set or None))
    row = {**metrics, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(row), flush=True)
    return [row]


def bench_store(args) -> list[dict]:
    """Build a store from an evaluation dataset's color views (symlinked into a temp refs
    folder), rebuild it (all reused), then search every line view as a page."""
    import tempfile
    from pathlib import Path

    import cv2

    from chromaflow.conf import load_config
    from chromaflow.models.lines import extract_lines
    from chromaflow.retrieval.build import build_store

    cv2.setNumThreads(args.threads)
    config = load_config(overrides=args.set or None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        refs, lines_files = Path(tmp) / "refs", []
        for color in sorted(Path(args.dataset).glob("*/*_color.png")):
            (refs / color.parent.name).mkdir(parents=True, exist_ok=True)
            (refs / color.parent.name / color.name).symlink_to(color.resolve())
            lines_files.append(color.with_name(color.name.replace("_color", "_line")))
        for label in ("build", "rebuild (all reused)"):
            t0 = time.perf_counter()
            store = build_store(refs, Path(tmp) / "index", config)
            sec = time.perf_counter() - t0
            rows.append({"step": label, "references": store.info["num_references"], "seconds": round(sec, 2),
                         "per_reference_ms": round(sec / store.info["num_references"] * 1000, 1)})
            print(json.dumps(rows[-1]), flush=True)
        pages = []
        for path in lines_files:
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            pages.append((extract_lines(rgb, config.lines).lines, rgb))
        t0 = time.perf_counter()
        for lines, rgb in pages:
            store.search(lines, rgb)
        sec = time.perf_counter() - t0
        rows.append({"step": "search (per page)", "references": len(pages), "seconds": round(sec, 2),
                     "per_reference_ms": round(sec / len(pages) * 1000, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("faiss")
    f.add_argument("--n", type=int, default=1_000_000)
    f.add_argument("--dim", type=int, default=512)
    f.add_argument("--queries", type=int, default=1000)
    f.add_argument("--k", type=int, default=10)
    f.add_argument("--data", choices=["gaussian", "clustered"], default="gaussian")
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--kinds", nargs="+", default=["ivf", "pq"], choices=["hnsw", "ivf", "pq"])
    f.add_argument("--hnsw-m", type=int, default=32)
    f.add_argument("--ef-construction", type=int, default=80)
    f.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256, 512])
    f.add_argument("--nlist", type=int, default=0)
    f.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    f.add_argument("--pq-m", type=int, default=0)
    f.add_argument("--refine", type=int, nargs="+", default=[64, 256, 1024])
    d = sub.add_parser("descriptor")
    d.add_argument("--patches", type=int, default=400)
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--work-sizes", type=int, nargs="+", default=[128, 256])
    i = sub.add_parser("identity")
    i.add_argument("--dataset", required=True)
    i.add_argument("--set", nargs="*", help="config overrides key=value")
    st = sub.add_parser("store")
    st.add_argument("--dataset", required=True)
    st.add_argument("--threads", type=int, default=1)
    st.add_argument("--set", nargs="*", help="config overrides key=value")
    args = parser.parse_args()
    rows = {"faiss": bench_faiss, "descriptor": bench_descriptor, "identity": bench_identity,
            "store": bench_store}[args.command](args)
    print(markdown(rows))


if __name__ == "__main__":
    main()
