"""The stage key (stages/registry.py `stage_key`) and the skip decision built on it
(stages/runner.py `is_done`), on hand-written job folders: each input a result depends on
is changed alone, and the expectation is written out (changes the key / is redone), never
taken from the code's own earlier answer."""

from __future__ import annotations

import hashlib
import json

import pytest

from chromaflow.conf import load_config
from chromaflow.retrieval.store_format import STORE_FORMAT, STORE_JSON
from chromaflow.stages.registry import INGEST, stage_config_sha, stage_key
from chromaflow.stages.runner import cached_stats, finish_shard, is_done
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes

CONFIG = load_config()


def job_with(tmp_path, done=("ingest", "lines", "instances"), shard_size=2) -> JobDir:
    job = JobDir(tmp_path / "job", "ch")
    job.root.mkdir(parents=True, exist_ok=True)
    job.write_info({"name": "ch", "kind": "chapter", "source": "s", "refs": "r", "num_items": 2, "num_shards": 1,
                    "config": CONFIG.model_dump(mode="json")})
    for stage in done:
        write_result(job, stage, f"{stage} output")
    return job


def write_result(job: JobDir, stage: str, content: str, shard: int = 0) -> None:
    """A finished (stage, shard) whose tar holds `content` (so its output_sha256 follows it)."""
    samples = [{"__key__": "p000000", "png": content.encode(), "json": json_bytes({"index": 0, "source": "p1.png"})}]
    keys = ("source", stage_config_sha(CONFIG, INGEST)) if stage == INGEST else stage_key(job, stage, shard, CONFIG)
    finish_shard(job, stage, shard, samples, [], keys[0], keys[1], 0.0)


def write_store(job: JobDir, fingerprint: str) -> None:
    job.references.mkdir(exist_ok=True)
    (job.references / STORE_JSON).write_text(json.dumps({"format": STORE_FORMAT, "fingerprint": fingerprint}))


def test_config_sha_covers_exactly_the_stage_sections():
    def changed(stage: str, override: str) -> bool:
        return stage_config_sha(load_config(overrides=[override]), stage) != stage_config_sha(CONFIG, stage)

    assert changed(INGEST, "job.shard_size=3") and changed(INGEST, "ingest.video_stride=3")
    assert not changed(INGEST, "colorize.work_size=768") and not changed(INGEST, "upscale.radius=5")
    assert changed("lines", "colorize.work_size=768") and not changed("lines", "job.shard_size=3")
    assert not changed("lines", "upscale.radius=5")
    assert changed("upscale", "upscale.radius=5") and not changed("upscale", "colorize.work_size=768")
    assert changed("colorize", "colorize.work_size=768") and not changed("colorize", "upscale.radius=5")


def test_key_is_none_until_every_input_shard_is_finished(tmp_path):
    # retrieve reads lines, ingest and instances: any one missing leaves it unstartable
    for missing in ("lines", INGEST, "instances"):
        job = job_with(tmp_path / missing, done=[s for s in ("ingest", "lines", "instances") if s != missing])
        input_sha, config_sha = stage_key(job, "retrieve", 0, CONFIG)
        assert input_sha is None and config_sha == stage_config_sha(CONFIG, "retrieve"), missing
    job = job_with(tmp_path / "all")
    assert stage_key(job, "retrieve", 0, CONFIG)[0] is not None
    assert stage_key(job, "retrieve", 1, CONFIG)[0] is None  # another shard: nothing finished there


def test_input_sha_is_the_hash_of_the_upstream_outputs_and_job_inputs(tmp_path):
    job = job_with(tmp_path)
    write_store(job, "store-v1")
    stats = {s: json.loads(job.stats_path(s, 0).read_text())["output_sha256"] for s in ("ingest", "lines")}
    # the documented composition, by hand: job inputs first, then the inputs in table order
    expected = hashlib.sha256(f"lines:{stats['lines']}|ingest:{stats['ingest']}".encode()).hexdigest()
    assert stage_key(job, "instances", 0, CONFIG)[0] == expected
    instances_sha = json.loads(job.stats_path("instances", 0).read_text())["output_sha256"]
    expected = hashlib.sha256(f"references:store-v1|lines:{stats['lines']}|ingest:{stats['ingest']}|"
                              f"instances:{instances_sha}".encode()).hexdigest()
    assert stage_key(job, "retrieve", 0, CONFIG)[0] == expected


def test_every_input_changes_the_key_alone(tmp_path):
    job = job_with(tmp_path)
    write_store(job, "store-v1")
    seen = {stage_key(job, "retrieve", 0, CONFIG)}
    write_store(job, "store-v2")  # a rebuilt reference store
    seen.add(stage_key(job, "retrieve", 0, CONFIG))
    for upstream in ("lines", INGEST, "instances"):
        write_result(job, upstream, f"{upstream} output, changed")
        seen.add(stage_key(job, "retrieve", 0, CONFIG))
    seen.add(stage_key(job, "retrieve", 0, load_config(overrides=["retrieval.top_k=7"])))
    assert len(seen) == 6  # the start, then five changes: each gave a new key
    assert stage_key(job, "retrieve", 0, CONFIG) == stage_key(job, "retrieve", 0, CONFIG)


def test_job_input_fingerprints(tmp_path):
    from chromaflow.stages.registry import job_input_fingerprint

    job = job_with(tmp_path)
    assert job_input_fingerprint(job, "references", CONFIG) == "none"  # no store built yet
    (job.references).mkdir()
    (job.references / STORE_JSON).write_text("{broken")
    assert job_input_fingerprint(job, "references", CONFIG) == "none"
    write_store(job, "abc")
    assert job_input_fingerprint(job, "references", CONFIG) == "abc"
    on = load_config(overrides=["colorize.palette_memory=true"])
    off = load_config(overrides=["colorize.palette_memory=false"])
    assert job_input_fingerprint(job, "palette_memory", on) == "off"  # enabled, not built yet
    job.palette_memory.write_text('{"colors": 1}')
    assert job_input_fingerprint(job, "palette_memory", on) == hashlib.sha256(b'{"colors": 1}').hexdigest()
    assert job_input_fingerprint(job, "palette_memory", off) == "off"
    with pytest.raises(ValueError, match="unknown job input 'weights'"):
        job_input_fingerprint(job, "weights", CONFIG)


def test_is_done_needs_same_inputs_same_config_and_the_output_as_recorded(tmp_path):
    job = job_with(tmp_path)
    assert is_done(job, "lines", 0, CONFIG) and is_done(job, "instances", 0, CONFIG)
    assert not is_done(job, "retrieve", 0, CONFIG)  # never ran
    assert not is_done(job, "lines", 0, load_config(overrides=["colorize.work_size=768"]))  # config changed
    assert is_done(job, "lines", 0, load_config(overrides=["upscale.radius=5"]))  # a key it does not read
    write_result(job, INGEST, "ingest output, changed")  # its input changed
    assert not is_done(job, "lines", 0, CONFIG)
    assert not is_done(job, "instances", 0, CONFIG)


def test_is_done_checks_the_tar_itself(tmp_path):
    job = job_with(tmp_path)
    tar = job.shard_path("lines", 0)
    data = tar.read_bytes()
    tar.write_bytes(data + b"\0" * 512)  # grown
    assert not is_done(job, "lines", 0, CONFIG)
    tar.write_bytes(data[:-512])  # shrunk
    assert not is_done(job, "lines", 0, CONFIG)
    tar.write_bytes(data)
    assert is_done(job, "lines", 0, CONFIG)
    tar.unlink()
    assert not is_done(job, "lines", 0, CONFIG)
    write_result(job, "lines", "lines output")
    # the upstream's stats lost: the stage cannot be done, whatever its own stats say
    job.stats_path(INGEST, 0).unlink()
    assert not is_done(job, "lines", 0, CONFIG)


def test_stats_with_a_missing_field_are_not_done(tmp_path):
    job = job_with(tmp_path)
    path = job.stats_path("lines", 0)
    stats = json.loads(path.read_text())
    for field in ("input_sha256", "config_sha256", "output_bytes"):
        path.write_text(json.dumps({k: v for k, v in stats.items() if k != field}))
        assert not is_done(job, "lines", 0, CONFIG), field
    path.write_text("{torn")
    assert not is_done(job, "lines", 0, CONFIG)


def test_cached_stats_report_the_earlier_result(tmp_path):
    job = job_with(tmp_path, done=("ingest",))
    samples = [{"__key__": f"p{i:06d}", "png": b"x"} for i in range(3)]
    failed = [{"key": "p000003", "name": "p4.png", "error": "ValueError: bad"}]
    keys = stage_key(job, "lines", 0, CONFIG)
    finish_shard(job, "lines", 0, samples, failed, keys[0], keys[1], 0.0)
    cached = cached_stats(job, "lines", 0)
    assert (cached.status, cached.count, cached.failed) == ("cached", 3, failed)
    stats = json.loads(job.stats_path("lines", 0).read_text())
    job.stats_path("lines", 0).write_text(json.dumps({k: v for k, v in stats.items() if k not in ("count", "failed")}))
    assert (cached_stats(job, "lines", 0).count, cached_stats(job, "lines", 0).failed) == (0, [])  # fields absent
    with pytest.raises(RuntimeError, match="lines shard 1 has no finished result"):
        cached_stats(job, "lines", 1)
