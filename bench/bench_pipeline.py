"""End-to-end CPU benchmark of the colorize pipeline (results go in docs/benchmarks.md).

    python bench/bench_pipeline.py [--pages 64] [--size 1200x1700] [--out /tmp/chromaflow-bench]

Measures, on an OpenMoji demo chapter (line-art manga pages, `chromaflow.demo`):
  1. the `colorize-chapter` flow (Prefect API already up, local Ray cluster started by the
     flow): wall time, pages/s, and the per-stage work from the stats files;
  2. the same stages as plain functions with the same parallelism, no Prefect and no Ray
     (a thread pool for lines/retrieval, a process pool that builds the colorizer once per
     process for colorize/upscale): the orchestration overhead is flow minus plain;
  3. re-running the finished job: wall time and the number of recomputed (shard, stage) pairs.

    python bench/bench_pipeline.py --overlap [--pages 64] [--colorize-delay 0.5]

measures instead what chaining each shard's stages buys (flows/shard_stages.py): the same
chapter through the flow with `prefect.overlap_stages` true and false (the barrier version:
every shard finishes a stage before any starts the next), colorize made slow on 2 actors
(--colorize-delay seconds of sleep per colorize request on top of the region colorizer: a
GPU-bound colorizer as the host sees it; 0 keeps the CPU-bound region colorizer alone). For
each it reports the shard-stage phase's wall time (first lines start to last upscale end,
from the stats files) and the busiest worker's stage sum: each Ray actor's colorize+upscale
seconds (stats `pid`), and the flow process's lines+retrieve seconds divided by its threads.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def stage_seconds(job_root: Path) -> dict[str, float]:
    from chromaflow.stages.registry import SHARD_SETS

    totals = {}
    for stage in SHARD_SETS:
        totals[stage] = sum(json.loads(p.read_text())["seconds"] for p in (job_root / stage).glob("*.stats.json"))
    return totals


_runner = None


def _init_worker(config_json: dict) -> None:
    global _runner
    from chromaflow.conf import Config
    from chromaflow.stages.workers import PooledStages

    _runner = PooledStages(Config.model_validate(config_json))


def _run_on_worker(stage: str, root: str, shard: int) -> dict:
    from chromaflow.storage.job import JobDir

    return _runner.run(stage, JobDir.open(root), shard).to_dict()


def plain_pipeline(chapter: Path, refs: Path, out: Path, overrides: list[str]) -> float:
    """The same DAG without Prefect or Ray."""
    from chromaflow.conf import load_config
    from chromaflow.flows.colorize import prepare_job
    from chromaflow.stages import export, ingest, instances, lines, palette_memory, references, retrieve

    start = time.perf_counter()
    config = load_config(overrides=overrides)
    job = prepare_job(str(chapter), str(refs), str(out), config, "chapter")
    cfg = config.model_dump(mode="json")
    # spawn, not fork: this process already runs Prefect's threads and Ray's client.
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(config.ray.num_actors, mp_context=spawn, initializer=_init_worker,
                                                initargs=(cfg,)) as actors:
        summary = ingest.run(job, chapter, config)
        references.run(job, str(refs), config)
        palette_memory.run(job, config)
        shards = range(summary.num_shards)
        with concurrent.futures.ThreadPoolExecutor(config.prefect.max_parallel_tasks) as threads:
            list(threads.map(lambda k: lines.run(job, k, config), shards))
            list(threads.map(lambda k: instances.run(job, k, config), shards))
            list(threads.map(lambda k: retrieve.run(job, k, config), shards))
        for stage in ("colorize", "upscale"):
            list(actors.map(_run_on_worker, [stage] * len(shards), [str(job.root)] * len(shards), shards))
    export.run(job, [])
    return time.perf_counter() - start


def shard_phase(job_root: Path, threads: int) -> dict:
    """Wall time of the shard stages and the busiest worker's stage sum (stats files)."""
    stats = {stage: [json.loads(p.read_text()) for p in (job_root / stage).glob("*.stats.json")]
             for stage in ("lines", "retrieve", "colorize", "upscale")}
    wall = max(s["finished_at"] for s in stats["upscale"]) - min(s["started_at"] for s in stats["lines"])
    actors: dict[int, float] = {}
    for stage in ("colorize", "upscale"):
        for s in stats[stage]:
            actors[s["pid"]] = actors.get(s["pid"], 0.0) + s["seconds"]
    flow_threads = sum(s["seconds"] for stage in ("lines", "retrieve") for s in stats[stage]) / threads
    busiest = max([*actors.values(), flow_threads])
    start = min(s["started_at"] for s in stats["lines"])
    pooled = stats["colorize"] + stats["upscale"]
    return {"shard_phase_wall_seconds": round(wall, 2), "busiest_worker_seconds": round(busiest, 2),
            "wall_over_busiest": round(wall / busiest, 3),
            "actor_stage_seconds": sorted(round(v, 2) for v in actors.values()),
            "flow_thread_stage_seconds": round(flow_threads, 2),
            # when the actors got their first shard, and when lines/retrieve of the last shard ended
            "first_colorize_start_seconds": round(min(s["started_at"] for s in stats["colorize"]) - start, 2),
            "lines_retrieve_end_seconds": round(max(s["finished_at"] for s in stats["retrieve"]) - start, 2),
            "actor_idle_after_first_shard_seconds": round(sum(
                _gaps(sorted((s["started_at"], s["finished_at"]) for s in pooled if s["pid"] == pid))
                for pid in actors), 2)}


def _gaps(intervals: list[tuple[float, float]]) -> float:
    return sum(max(0.0, b[0] - a[1]) for a, b in zip(intervals, intervals[1:]))


def overlap_benchmark(chapter: Path, refs: Path, out: Path, shard_size: int, delay: float,
                      extra: list[str]) -> dict:
    from chromaflow.conf import load_config
    from chromaflow.flows.colorize import colorize_chapter

    bench_dir = str(Path(__file__).resolve().parent)  # Ray actors import slow_colorizer from here
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [bench_dir, os.environ.get("PYTHONPATH")]))
    os.environ["CHROMAFLOW_BENCH_COLORIZE_DELAY"] = str(delay)
    sys.path.insert(0, bench_dir)
    backend = "slow_colorizer:GpuLikeColorizer" if delay > 0 else "region"
    overrides = [f"job.shard_size={shard_size}", f"colorize.backend={backend}", "ray.num_actors=2", *extra]
    config = load_config(overrides=overrides)
    threads = config.prefect.max_parallel_tasks
    # Ray already running (as next to a long-lived `chromaflow serve`): the runs compare
    # schedules, not Ray start-up. Each run still starts its own actors.
    import ray

    from chromaflow.stages.pool import ensure_ray

    ensure_ray(config)
    result = {"colorize_backend": backend, "colorize_delay_seconds": delay, "overrides": extra}
    for mode in ("barrier", "overlap"):
        job = out / mode
        t0 = time.perf_counter()
        colorize_chapter(source=str(chapter), refs=str(refs), out=str(job),
                         overrides=overrides + [f"prefect.overlap_stages={mode == 'overlap'}"])
        result[mode] = {"flow_seconds": round(time.perf_counter() - t0, 2),
                        **shard_phase(job, min(threads, len(list((job / "ingest").glob("*.tar")))))}
    result["overlap_saves_seconds"] = round(result["barrier"]["shard_phase_wall_seconds"]
                                            - result["overlap"]["shard_phase_wall_seconds"], 2)
    ray.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=64)
    parser.add_argument("--size", default="1200x1700")
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("/tmp/chromaflow-bench"))
    parser.add_argument("--overlap", action="store_true", help="overlapped vs barrier shard stages")
    parser.add_argument("--colorize-delay", type=float, default=0.5, help="--overlap: seconds per colorize request")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="--overlap: config override")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from prefect import flow

    from chromaflow.demo import build_demo
    from chromaflow.flows.colorize import colorize_chapter

    if args.out.exists():
        shutil.rmtree(args.out)
    chapter, refs = build_demo(args.out / "data", num_pages=args.pages, page_size=(width, height))
    overrides = [f"job.shard_size={args.shard_size}"]

    @flow(name="bench-warmup")
    def warmup() -> int:
        return 1

    warmup()  # bring up the Prefect API (the temporary server when PREFECT_API_URL is unset)
    if args.overlap:
        result = overlap_benchmark(chapter, refs, args.out, args.shard_size, args.colorize_delay, args.overrides)
        print(json.dumps({"pages": args.pages, "page_size": args.size, "shard_size": args.shard_size,
                          "cpus": os.cpu_count(), **result}, indent=2))
        return

    t0 = time.perf_counter()
    first = colorize_chapter(source=str(chapter), refs=str(refs), out=str(args.out / "flow"), overrides=overrides)
    t_flow = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = colorize_chapter(source=str(chapter), refs=str(refs), out=str(args.out / "flow"), overrides=overrides)
    t_rerun = time.perf_counter() - t0
    t_plain = plain_pipeline(chapter, refs, args.out / "plain", overrides)

    work = stage_seconds(args.out / "flow")
    overhead = t_flow - t_plain
    result = {
        "pages": args.pages, "page_size": args.size, "shard_size": args.shard_size, "cpus": os.cpu_count(),
        "flow_seconds": round(t_flow, 2), "pages_per_second": round(args.pages / t_flow, 3),
        "plain_seconds": round(t_plain, 2), "plain_pages_per_second": round(args.pages / t_plain, 3),
        "orchestration_overhead_seconds": round(overhead, 2),
        "orchestration_overhead_percent": round(100 * overhead / t_flow, 1),
        "stage_work_seconds": {k: round(v, 2) for k, v in work.items()},
        "stage_work_seconds_per_page": {k: round(v / args.pages, 3) for k, v in work.items()},
        "rerun_seconds": round(t_rerun, 2), "rerun_fraction_of_first": round(t_rerun / t_flow, 3),
        "rerun_recomputed_shard_stages": again["computed"], "first_computed_shard_stages": first["computed"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
