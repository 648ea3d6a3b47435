"""Episode benchmarks (results go in docs/benchmarks.md, section "Episodes").

    python bench/bench_episodes.py scenes  [--data ../shared/data/dev/basicpbc]
    python bench/bench_episodes.py flicker [--data ../shared/data/dev/basicpbc]
    python bench/bench_episodes.py memory  [--frames 500 1500 5000] [--hd-frames 1000] [--out /tmp/cf-episodes]
    python bench/bench_episodes.py stream  [--frames 500 1500 5000] [--hd-frames 1000] [--out /tmp/cf-episodes]
    python bench/bench_episodes.py speed   [--frames 64] [--out /tmp/cf-episodes]

- scenes: cut detection (precision/recall, a cut found within one frame) of the old HSV
  histogram detector and PySceneDetect's content and adaptive detectors, on generated
  line-art episodes (bench/episode_clips.py, through H.264), a tinted copy of one, and the
  BasicPBC clips played one after another (one cut between clips, none inside).
- flicker: models/clip_evaluation.evaluate_clip on the BasicPBC clips and on generated
  shots with ground truth for every frame (flicker beside the ground truth's own).
- memory: `chromaflow colorize` on generated episodes (320x240, on twos, with audio) as a
  subprocess; peak RSS of the main process and of it plus all its descendants (Prefect's
  temporary server, Ray's daemons and actors), sampled every 0.5 s; A/V durations in/out.
- stream: ingest + export alone (the streamed parts), in a fresh process per episode:
  RSS after imports, peak during ingest and during export (pages/, episode.mp4, report).
- speed: frames/s end to end at 640x360 (default config, region colorizer), each drawing
  held 2 frames, with held-drawing reuse on and off: the stage functions in one process,
  so Prefect's and Ray's start-up (constant per run) do not blur the ratio, timed in CPU
  seconds (wall time on the shared machine swings with the others' load).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from episode_clips import Shot, cut_positions, episode_frames, make_shots, shot_frame, write_video  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/dev/basicpbc"


# --- scenes ---------------------------------------------------------------------------------

def histogram_ids(frames: list[np.ndarray], threshold: float = 0.4) -> list[int]:
    """The detector PySceneDetect replaced (Bhattacharyya distance of HSV histograms)."""
    ids, scene, previous = [], 0, None
    for rgb in frames:
        hsv = cv2.cvtColor(cv2.resize(rgb, (160, 90), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 8, 8], [0, 180, 0, 256, 0, 256])
        hist = cv2.normalize(hist, hist).flatten()
        if previous is not None and cv2.compareHist(previous, hist, cv2.HISTCMP_BHATTACHARYYA) > threshold:
            scene += 1
        previous = hist
        ids.append(scene)
    return ids


def cut_scores(ids: list[int], truth: list[int]) -> dict:
    found = [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]]
    right = sum(any(abs(c - t) <= 1 for t in truth) for c in found)
    hit = sum(any(abs(c - t) <= 1 for c in found) for t in truth)
    return {"cuts": len(truth), "found": len(found), "correct": right,
            "precision": round(right / len(found), 3) if found else None, "recall": round(hit / max(1, len(truth)), 3)}


def scene_sets(data: Path, out: Path) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    from chromaflow.storage.video import VideoReader

    sets = {}
    for seed in (0, 1):
        shots = make_shots(600, seed=seed)
        video = write_video(out / f"scenes{seed}.mp4", episode_frames(shots, (320, 240)), (320, 240), audio=False)
        sets[f"generated-{seed} (600 frames)"] = ([f.image for f in VideoReader(video)], cut_positions(shots))
    frames, truth = sets["generated-0 (600 frames)"]
    rng, tinted, bounds = np.random.default_rng(5), [], [0, *truth, len(frames)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        paper = rng.integers(60, 250, 3).astype(np.uint8)
        for f in frames[a:b]:
            g = f.copy()
            g[(f > 200).all(axis=2)] = paper
            tinted.append(g)
    sets["generated-0 tinted paper"] = (tinted, truth)
    clip_frames, clip_truth = [], []
    for clip in ("laughing_girl", "smoke_explosion", "laughing_girl"):
        if clip_frames:
            clip_truth.append(len(clip_frames))
        clip_frames += [cv2.resize(cv2.imread(f)[:, :, ::-1], (320, 320), interpolation=cv2.INTER_AREA)
                        for f in sorted(glob.glob(str(data / clip / "line" / "*.png")))]
    if clip_frames:
        sets["basicpbc (3 clips in a row)"] = (clip_frames, clip_truth)
    return sets


def bench_scenes(args) -> None:
    from chromaflow.models.scenes import make_detector, scene_ids

    args.out.mkdir(parents=True, exist_ok=True)
    detectors = {"histogram 0.4 (old)": lambda f: histogram_ids(f),
                 "content 27 (luma+edges)": lambda f: scene_ids(f, make_detector("content", 27.0, 4)),
                 "adaptive 3.0 (luma+edges)": lambda f: scene_ids(f, make_detector("adaptive", 3.0, 4))}
    for name, (frames, truth) in scene_sets(args.data, args.out).items():
        for detector, run in detectors.items():
            started = time.perf_counter()
            ids = run(frames)
            ms = 1000 * (time.perf_counter() - started) / len(frames)
            print(json.dumps({"set": name, "detector": detector, **cut_scores(ids, truth), "ms_per_frame": round(ms, 2)}))


# --- flicker --------------------------------------------------------------------------------

def bench_flicker(args) -> None:
    from chromaflow.models.clip_evaluation import evaluate_clip, evaluate_clip_folder

    for seed, pan in ((11, 0.0), (12, 0.01), (13, 0.0)):
        shot = [Shot(24, seed, pan, 1 + seed % 2)]
        lines = list(episode_frames(shot, (320, 240), hold=2))
        gt = dict(enumerate(episode_frames(shot, (320, 240), hold=2, colored=True)))
        print(json.dumps(evaluate_clip(lines, gt, f"generated seed {seed} pan {pan}")))
    for clip in sorted(p for p in args.data.iterdir() if (p / "gt").is_dir()) if args.data.exists() else []:
        print(json.dumps(evaluate_clip_folder(clip)))


# --- memory and speed (the real CLI) ---------------------------------------------------------

def make_refs(root: Path) -> Path:
    shot = Shot(2, 11, 0.0, 1)
    for i in range(2):
        path = root / "hero" / f"hero_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), shot_frame(shot, i, (320, 240), colored=True)[:, :, ::-1])
    return root


class PeakRss(threading.Thread):
    """Samples RSS of a process and of it plus its descendants."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.process, self.every, self.main, self.total, self.done = psutil.Process(pid), every, 0, 0, False

    def run(self) -> None:
        import psutil

        while not self.done:
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        rss.append(0)
                self.main, self.total = max(self.main, rss[0]), max(self.total, sum(rss))
            except psutil.Error:
                return
            time.sleep(self.every)


def av_durations(path: Path) -> dict:
    import av

    with av.open(str(path)) as container:
        return {s.type: round(float(s.duration * s.time_base), 4) for s in container.streams if s.duration}


def run_cli(video: Path, refs: Path, out: Path, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-c", "from chromaflow.cli import main; main()", "colorize", str(video), "--refs", str(refs),
           "--out", str(out)] + [a for o in overrides for a in ("--set", o)]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}  # a busy 2-core machine
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = PeakRss(proc.pid)
    sampler.start()
    output = proc.communicate()[0]
    sampler.done = True
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"chromaflow colorize failed ({proc.returncode}):\n{output[-3000:]}")
    reuse = next((line.strip() for line in output.splitlines() if "reused" in line and "frames" in line), "")
    return {"seconds": round(seconds, 1), "peak_rss_main_mb": round(sampler.main / 2**20),
            "peak_rss_all_mb": round(sampler.total / 2**20), "reuse": reuse}


def episode(out: Path, frames: int, size: tuple[int, int], hold: int = 2) -> Path:
    shots = make_shots(frames, seed=frames, min_len=24, max_len=96)
    return write_video(out / f"ep{frames}_{size[0]}x{size[1]}_hold{hold}.mp4", episode_frames(shots, size, hold),
                       size)


def bench_memory(args) -> None:
    refs = make_refs(args.out / "refs")
    # The cheap built-in `palette` backend: memory is the pipeline's (decode, shards, encode,
    # report, task states), which does not depend on the colorizer; the region colorizer
    # would take hours for 5,000 frames on 2 cores (its speed is measured by `speed`).
    common = ["colorize.backend=palette", *args.set]
    runs = [(n, (320, 240), common) for n in args.frames]
    runs += [(args.hd_frames, (1920, 1080), common)] if args.hd_frames else []
    for frames, size, overrides in runs:
        video = episode(args.out, frames, size)
        job = args.out / f"job{frames}_{size[0]}"
        shutil.rmtree(job, ignore_errors=True)
        result = run_cli(video, refs, job, overrides)
        print(json.dumps({"frames": frames, "size": f"{size[0]}x{size[1]}", "overrides": overrides, **result,
                          "input_durations": av_durations(video),
                          "output_durations": av_durations(job / "episode.mp4")}), flush=True)
        shutil.rmtree(job, ignore_errors=True)


def stream_one(video: Path, refs: Path, out: Path) -> dict:
    """ingest + export of one episode in this process (the streamed parts), the final shards
    being copies of the ingest shards (colorize/upscale keep one shard in memory and are
    measured by `memory`); returns RSS levels in MB."""
    import psutil

    from chromaflow.conf import load_config
    from chromaflow.flows.colorize import prepare_job
    from chromaflow.stages import export, ingest
    from chromaflow.stages.registry import FINAL, INGEST
    from chromaflow.storage.shards import read_stats, write_stats

    me = psutil.Process()
    sampler = PeakRss(os.getpid(), every=0.2)
    sampler.start()
    config = load_config(None, [])
    job = prepare_job(str(video), str(refs), str(out), config, "episode")
    start_mb = me.memory_info().rss / 2**20
    started = time.perf_counter()
    ingest.run(job, video, config)
    ingest_s, ingest_peak = time.perf_counter() - started, sampler.main / 2**20
    for shard in range(job.num_shards()):
        job.stage_dir(FINAL).mkdir(exist_ok=True)
        shutil.copyfile(job.shard_path(INGEST, shard), job.shard_path(FINAL, shard))
        write_stats(job, FINAL, shard, {**read_stats(job, INGEST, shard), "stage": FINAL})
    started = time.perf_counter()
    exported = export.run(job, [])
    sampler.done = True
    return {"rss_after_imports_mb": round(start_mb), "peak_rss_ingest_mb": round(ingest_peak),
            "peak_rss_export_mb": round(sampler.main / 2**20), "ingest_seconds": round(ingest_s, 1),
            "export_seconds": round(time.perf_counter() - started, 1), "frames_written": exported["outputs"]["frames"]}


def bench_stream(args) -> None:
    refs = make_refs(args.out / "refs")
    runs = [(n, (320, 240)) for n in args.frames] + ([(args.hd_frames, (1920, 1080))] if args.hd_frames else [])
    for frames, size in runs:
        video = episode(args.out, frames, size)
        job = args.out / f"stream{frames}_{size[0]}"
        shutil.rmtree(job, ignore_errors=True)
        code = ("import sys, json; sys.path.insert(0, %r); import bench_episodes as b; from pathlib import Path; "
                "print(json.dumps(b.stream_one(Path(%r), Path(%r), Path(%r))))" % (str(Path(__file__).parent), str(video),
                                                                                  str(refs), str(job)))
        line = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        result = json.loads(line.strip().splitlines()[-1])
        print(json.dumps({"frames": frames, "size": f"{size[0]}x{size[1]}", **result,
                          "input_durations": av_durations(video), "output_durations": av_durations(job / "episode.mp4")}),
              flush=True)
        shutil.rmtree(job, ignore_errors=True)


def plain_run(video: Path, refs: Path, out: Path, overrides: list[str]) -> dict:
    """The whole episode DAG as plain stage functions in this process (no Prefect/Ray
    start-up in the timing); seconds per stage."""
    from chromaflow.conf import load_config
    from chromaflow.flows.colorize import prepare_job
    from chromaflow.models.colorizers import build_colorizer
    from chromaflow.stages import colorize, export, ingest, instances, lines, palette_memory, references, retrieve, upscale

    config = load_config(None, overrides)
    job = prepare_job(str(video), str(refs), str(out), config, "episode")
    seconds: dict[str, float] = {}

    def timed(stage: str, fn) -> None:
        # CPU seconds of this process: on a shared machine wall time swings with the others' load.
        started = time.process_time()
        fn()
        seconds[stage] = seconds.get(stage, 0.0) + time.process_time() - started

    timed("ingest", lambda: ingest.run(job, video, config))
    timed("references", lambda: (references.run(job, str(refs), config), palette_memory.run(job, config)))
    colorizer = build_colorizer(config)
    for shard in range(job.num_shards()):
        timed("lines", lambda: lines.run(job, shard, config))
        timed("instances", lambda: instances.run(job, shard, config))
        timed("retrieve", lambda: retrieve.run(job, shard, config))
        timed("colorize", lambda: colorize.run(job, shard, config, colorizer))
        timed("upscale", lambda: upscale.run(job, shard, config))
    timed("export", lambda: export.run(job, []))
    return {k: round(v, 1) for k, v in seconds.items()}


def bench_speed(args) -> None:
    refs = make_refs(args.out / "refs")
    warmup = episode(args.out, 8, (640, 360), hold=2)
    plain_run(warmup, refs, args.out / "warmup", [])  # one-time costs (lazy imports) out of the timing
    video = episode(args.out, args.frames, (640, 360), hold=2)
    for holds in ("true", "false"):
        job = args.out / f"speed_{holds}"
        shutil.rmtree(job, ignore_errors=True)
        started, cpu = time.perf_counter(), time.process_time()
        stages = plain_run(video, refs, job, [f"ingest.holds={holds}"])
        total, cpu = time.perf_counter() - started, time.process_time() - cpu
        reuse = json.loads((job / "job.json").read_text())["episode_video"]["reused"]
        print(json.dumps({"frames": args.frames, "size": "640x360", "holds": holds, "reused": reuse,
                          "wall_seconds": round(total, 1), "cpu_seconds": round(cpu, 1),
                          "frames_per_cpu_second": round(args.frames / cpu, 3), "stage_cpu_seconds": stages}),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["scenes", "flicker", "memory", "stream", "speed"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cf-episodes"))
    parser.add_argument("--frames", type=int, nargs="+", default=None)
    parser.add_argument("--hd-frames", type=int, default=1000)
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides (memory)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what in ("memory", "stream"):
        args.frames = args.frames or [500, 1500, 5000]
    elif args.what == "speed":
        args.frames = (args.frames or [64])[0]
    {"scenes": bench_scenes, "flicker": bench_flicker, "memory": bench_memory, "stream": bench_stream,
     "speed": bench_speed}[args.what](args)


if __name__ == "__main__":
    main()
