"""Whether a job folder holds a finished job for its source as it is now.

A colorize run ends by recording `finished` in job.json: when, the source's signature (file
names, sizes and modification times: cheap, no page is read) and the config's hash, plus
how many shards failed. The inbox flow (flows/inbox.py) uses it to skip chapters that are
done and to re-run the ones that are not:

    no job.json                             new         colorize
    finished, same source, same config*,    finished    skip (pages that failed as bad
      no failed shard                                   input fail again until the file changes)
    anything else                           incomplete  colorize again (finished shards are reused)

(* the sections that shape the outputs; `ray` and `prefect` settings do not count.)

The job id is a short hash of the job folder's absolute path: it tells apart two chapters
that share a name (two folders called `chapter`), and stays the same for every run of one
job, so its flow runs and artifact keys line up in the Prefect UI.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from chromaflow.conf import Config
from chromaflow.storage.job import JobDir

NEW, FINISHED, INCOMPLETE = "new", "finished", "incomplete"


def job_id(root: str | Path) -> str:
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]


def source_signature(source: str | Path) -> str:
    """Hash of the source's file names, sizes and mtimes (a folder: every non-hidden file)."""
    path = Path(source)
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts))
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(path) if f != path else f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def config_sha(config: Config) -> str:
    """Hash of the settings that shape the outputs (not how the run is executed: ray, prefect)."""
    return config.section_hash(*(name for name in Config.model_fields if name not in ("ray", "prefect")))


def mark_finished(job: JobDir, source: str | Path, config: Config, failed_shards: int, problems: int) -> None:
    info = job.read_info()
    info["finished"] = {"at": time.time(), "source_signature": source_signature(source),
                        "config_sha256": config_sha(config), "failed_shards": failed_shards, "problems": problems}
    job.write_info(info)


def job_state(root: str | Path, source: str | Path, config: Config) -> tuple[str, str]:
    """(NEW | FINISHED | INCOMPLETE, why) for the job of `source` at `root`."""
    job_json = Path(root) / "job.json"
    if not job_json.exists():
        return NEW, "no job yet"
    try:
        finished = json.loads(job_json.read_text()).get("finished")
    except ValueError:
        return INCOMPLETE, "job.json unreadable"
    if not finished:
        return INCOMPLETE, "never finished"
    if finished.get("source_signature") != source_signature(source):
        return INCOMPLETE, "source changed"
    if finished.get("config_sha256") != config_sha(config):
        return INCOMPLETE, "config changed"
    if finished.get("failed_shards"):
        return INCOMPLETE, f"{finished['failed_shards']} shard(s) failed"
    return FINISHED, f"finished ({finished.get('problems', 0)} problem(s))"
