"""Memory on hostile and huge input (issue 12; results in docs/benchmarks.md).

    python bench/bench_memory.py zip   [--entry-gib 1.5]
    python bench/bench_memory.py pages [--sizes 2000x3000,6000x8000,12000x16000] [--out /tmp/chromaflow-mem]

zip:   a CBZ of ~2 MB holding one entry of 1.5 GiB of zeros (plus one real page), ingested
       in a fresh process; the same archive with the entry's size patched to lie (1000 bytes
       declared). Reports the peak RSS growth of that process over its state before ingest.
pages: one-page chapters of W x H line art run through `chromaflow colorize` (the CLI, the
       local Ray cluster it starts, the default CPU config, against a Prefect server started
       here first). A sampler adds up RSS and PSS of the CLI process and every process under
       it (Ray's gcs/raylet, the actors) every 0.2 s; reports the peak of the totals, the
       peak per process kind and the wall time. The Prefect server's own RSS is reported
       beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # synthetic.py draws the pages


# --- zip -------------------------------------------------------------------------------------

def make_bomb(path: Path, entry_bytes: int) -> None:
    import cv2
    from synthetic import PALETTES, draw_character

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        info = zipfile.ZipInfo("p1.png")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            chunk = b"\0" * (16 << 20)
            for _ in range(entry_bytes // len(chunk)):
                f.write(chunk)
        zf.writestr("p2.png", cv2.imencode(".png", draw_character(PALETTES["alice"], colored=False))[1].tobytes())


def lie_about_size(path: Path, name: str, declared: int) -> Path:
    """A copy whose central directory (what readers list) says the entry holds `declared` bytes."""
    import struct

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        first = zf.infolist()[0]
        assert first.filename == name
    at = bytes(data).index(b"PK\x01\x02")  # the entry's central record comes first
    usize, name_len, extra_len = struct.unpack("<I", data[at + 24:at + 28])[0], *struct.unpack("<HH", data[at + 28:at + 32])
    if usize != 0xFFFFFFFF:
        data[at + 24:at + 28] = struct.pack("<I", declared)
    else:  # the real size lives in the zip64 extra block (id 1): uncompressed size first
        pos = at + 46 + name_len
        while pos < at + 46 + name_len + extra_len:
            kind, size = struct.unpack("<HH", data[pos:pos + 4])
            if kind == 1:
                data[pos + 4:pos + 12] = struct.pack("<Q", declared)
                break
            pos += 4 + size
    liar = path.with_name("liar.cbz")
    liar.write_bytes(bytes(data))
    return liar


INGEST_PROBE = """
import json, sys, time
from pathlib import Path
from chromaflow.conf import load_config
from chromaflow.stages import ingest
from chromaflow.storage.job import JobDir

def status_mb(field):  # VmRSS now, VmHWM: this process's peak (ru_maxrss would carry the parent's over exec)
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024

job = JobDir(Path(sys.argv[2]), "bomb")
job.root.mkdir(parents=True, exist_ok=True)
job.write_info({"name": "bomb", "kind": "chapter", "source": "", "refs": "", "config": {}})
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status_mb("VmRSS")
started = time.time()
summary = ingest.run(job, Path(sys.argv[1]), load_config())
peak = status_mb("VmHWM")
print(json.dumps({"before_mb": before, "peak_mb": peak, "growth_mb": peak - before, "seconds": time.time() - started,
                  "failed": [f["error"] for f in summary.failed], "pages_ok": summary.num_items - len(summary.failed)}))
"""


def bench_zip(args) -> None:
    work = Path(args.out) / "zip"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bomb = work / "bomb.cbz"
    make_bomb(bomb, int(args.entry_gib * 2**30))
    with zipfile.ZipFile(bomb) as zf:
        declared = zf.getinfo("p1.png").file_size
    print(f"archive {bomb}: {bomb.stat().st_size / 1e6:.2f} MB on disk, entry p1.png declares {declared / 2**30:.2f} GiB")
    for archive in (bomb, lie_about_size(bomb, "p1.png", 1000)):
        out = subprocess.run([sys.executable, "-c", INGEST_PROBE, str(archive), str(work / f"job-{archive.stem}")],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{archive.name}: peak RSS growth {result['growth_mb']:.1f} MB ({result['before_mb']:.0f} -> "
              f"{result['peak_mb']:.0f} MB), {result['seconds']:.2f} s, pages ok {result['pages_ok']}, "
              f"refused: {result['failed']}")


# --- pages -----------------------------------------------------------------------------------

def make_page(path: Path, w: int, h: int) -> None:
    import cv2
    import numpy as np
    from synthetic import PALETTES, draw_character

    tile = draw_character(PALETTES["alice"], size=(w // 4, h // 4), colored=False)
    page = np.tile(tile, (4, 4, 1))
    page = np.pad(page, ((0, h - page.shape[0]), (0, w - page.shape[1]), (0, 0)), constant_values=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), page)


def process_kind(cmdline: str) -> str:
    for key in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "ray::StageActor", "ray::IDLE",
                "default_worker", "runtime_env"):
        if key in cmdline:
            return key
    return "chromaflow (flow process)" if "chromaflow" in cmdline else cmdline.split(" ")[0][-40:]


def tree(pid: int) -> list[int]:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def memory_of(pid: int) -> tuple[float, float, str]:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        fields = {line.split()[0]: int(line.split()[1]) for line in f if line.split()[0] in ("Rss:", "Pss:")}
    cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    return fields.get("Rss:", 0) / 1024, fields.get("Pss:", 0) / 1024, cmd


class Sampler(threading.Thread):
    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids, self.stop, self.peak_rss, self.peak_pss, self.kinds = pids, threading.Event(), 0.0, 0.0, {}

    def run(self) -> None:
        while not self.stop.wait(0.2):
            rss = pss = 0.0
            for p in sorted({q for root in self.pids for q in tree(root)}):
                try:
                    r, s, cmd = memory_of(p)
                except OSError:
                    continue
                rss, pss = rss + r, pss + s
                kind = process_kind(cmd)
                self.kinds[kind] = max(self.kinds.get(kind, 0.0), r)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)


def start_prefect_server(work: Path) -> tuple[subprocess.Popen, str]:
    port = 4299
    env = dict(os.environ, PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    import urllib.request
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return server, url
        except OSError:
            time.sleep(1)
    raise RuntimeError("prefect server did not start")


def run_measured(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, Sampler, float]:
    """Run the CLI under the sampler; retried when Ray's own start timed out (a loaded box
    can miss Ray's fixed 30 s raylet start)."""
    for _ in range(3):
        started = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sampler = Sampler([proc.pid])
        sampler.start()
        output = proc.communicate()[0]
        sampler.stop.set()
        sampler.join()
        if "timed out during startup" not in output:
            break
    return subprocess.CompletedProcess(cmd, proc.returncode, output), sampler, time.time() - started


def bench_pages(args) -> None:
    from synthetic import make_refs

    work = Path(args.out) / "pages"
    shutil.rmtree(work, ignore_errors=True)
    refs = make_refs(work / "refs")
    server, url = start_prefect_server(work)
    try:
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            chapter = work / f"chapter-{size}"
            make_page(chapter / "p1.png", w, h)
            out = work / f"job-{size}"
            cmd = [str(Path(sys.executable).parent / "chromaflow"), "colorize", str(chapter), "--refs", str(refs),
                   "--out", str(out)] + sum((["--set", s] for s in args.set), [])
            proc, sampler, seconds = run_measured(cmd, dict(os.environ, PREFECT_API_URL=url))
            server_rss = memory_of(server.pid)[0]
            kinds = ", ".join(f"{k} {v:.0f}" for k, v in sorted(sampler.kinds.items(), key=lambda kv: -kv[1]))
            print(f"{w}x{h} ({w * h / 1e6:.0f} Mpx): exit {proc.returncode}, {seconds:.0f} s, peak total RSS "
                  f"{sampler.peak_rss / 1024:.2f} GiB, PSS {sampler.peak_pss / 1024:.2f} GiB; per process (MB): {kinds}; "
                  f"prefect server {server_rss:.0f} MB")
            if proc.returncode != 0:
                print(proc.stdout[-3000:])
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the clean-up of the servers runs
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["zip", "pages"])
    parser.add_argument("--entry-gib", type=float, default=1.5)
    parser.add_argument("--sizes", default="2000x3000,6000x8000,12000x16000")
    parser.add_argument("--set", action="append", default=[], help="config override for the runs")
    parser.add_argument("--out", default="/tmp/chromaflow-mem")
    args = parser.parse_args()
    bench_zip(args) if args.what == "zip" else bench_pages(args)


if __name__ == "__main__":
    main()
