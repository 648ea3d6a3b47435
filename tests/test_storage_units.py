"""storage/shards.py and storage/atomic.py in detail: tar sizes from the tar format, sample
round trips, stats and failure records, the one-line full-disk message (on a real full
tmpfs where mounting is permitted), file modes, the temp-file sweep. Oracles: hashlib,
tarfile's block layout, hand-written expected strings."""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import pickle
import stat
import tarfile

import pytest

from chromaflow.storage.atomic import (TMP_MARK, DiskFull, atomic_path, disk_full, human_bytes,
                                       remove_stale_temp_files, write_bytes, write_json)
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import (_tar_bytes, iter_shard, json_bytes, key_order, read_failure, read_shard,
                                       read_stats, sha256_file, write_failure, write_shard, write_stats)
from small_disk import mounted_tmpfs

RECORD = 20 * 512  # tarfile pads an archive to whole records of 20 blocks


def test_sha256_file_is_hashlib_over_the_whole_file(tmp_path):
    data = bytes(range(256)) * 9000  # 2.3 MB: more than one read chunk
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()


def test_tar_size_estimate_follows_the_tar_block_layout(tmp_path):
    # members of 0, 1, 512 and 600 bytes: a 512-byte header each, data padded to 512, two end blocks
    samples = [{"__key__": "p000000", "a": b"", "b": b"x"}, {"__key__": "p000001", "c": b"y" * 512, "d": b"z" * 600}]
    expected = (512 + 0) + (512 + 512) + (512 + 512) + (512 + 1024) + 1024
    assert _tar_bytes(samples) == expected
    path = tmp_path / "s.tar"
    assert write_shard(path, samples) == 2
    size = path.stat().st_size
    assert size == (expected + RECORD - 1) // RECORD * RECORD  # the real file: the same, padded to a record


def test_samples_round_trip_exactly_from_a_list_or_a_generator(tmp_path):
    samples = [{"__key__": f"p{i:06d}", "png": bytes([i]) * (i + 1), "json": json_bytes({"i": i})} for i in range(4)]
    listed, generated = tmp_path / "a.tar", tmp_path / "b.tar"
    assert write_shard(listed, samples) == 4
    assert write_shard(generated, (dict(s) for s in samples)) == 4  # written as they come
    assert read_shard(listed) == samples and list(iter_shard(generated)) == samples
    assert listed.read_bytes() == generated.read_bytes()
    with tarfile.open(listed) as tar:  # fixed mtime and owner (docs/storage.md): reproducible bytes
        assert {(m.mtime, m.uname, m.gname) for m in tar.getmembers()} == {(0, "chromaflow", "chromaflow")}
    empty = tmp_path / "empty.tar"
    assert write_shard(empty, []) == 0 and read_shard(empty) == []
    # values must already be bytes: a stage that forgot to encode fails, nothing picks an encoding for it
    with pytest.raises(ValueError, match="doesn't map to a bytes"):
        write_shard(tmp_path / "c.tar", [{"__key__": "p000000", "json": {"i": 0}}])
    assert not (tmp_path / "c.tar").exists()
    for bad in ("a.b", "a/b"):
        with pytest.raises(ValueError, match="must not contain '.' or '/'"):
            write_shard(tmp_path / "bad.tar", [{"__key__": bad, "png": b""}])
        assert not (tmp_path / "bad.tar").exists()


def test_key_order_and_json_bytes():
    keys = ["p1000000", "p999999", "p000010", "p000002"]
    assert sorted(keys, key=key_order) == ["p000002", "p000010", "p999999", "p1000000"]
    assert json_bytes({"b": 1, "a": [2, {"d": 0, "c": 1}]}) == b'{"a": [2, {"c": 1, "d": 0}], "b": 1}'


def test_stats_and_failure_records(tmp_path):
    job = JobDir(tmp_path / "job", "ch")
    assert read_stats(job, "lines", 0) is None and read_failure(job, "lines", 0) is None
    write_stats(job, "lines", 0, {"count": 3})
    write_failure(job, "colorize", 2, {"error": "boom"})
    assert read_stats(job, "lines", 0) == {"count": 3} and read_failure(job, "colorize", 2) == {"error": "boom"}
    assert read_stats(job, "lines", 1) is None and read_failure(job, "colorize", 0) is None
    job.stats_path("lines", 0).write_text('{"count": ')  # torn: not done
    job.failed_path("colorize", 2).write_text("{")
    assert read_stats(job, "lines", 0) is None and read_failure(job, "colorize", 2) is None


# --- atomic writes -----------------------------------------------------------------------------


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 999, 1000, 1499, 12_000_000, 999_999_999, 2.5e9, 5e12)] == [
        "0 B", "999 B", "1.0 KB", "1.5 KB", "12.0 MB", "1000.0 MB", "2.5 GB", "5000.0 GB"]


def test_disk_full_message_says_what_the_file_needs_and_what_is_free(tmp_path):
    target = tmp_path / "colorize" / "ch-000001.tar"
    target.parent.mkdir()
    free = human_bytes(os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize)
    known = disk_full(target, 12_000_000, 3_000)
    assert str(known).startswith(f"{target}: no space left on device (this file needs 12.0 MB, ")
    assert str(known).endswith(" free there); free some space and run `chromaflow rerun` on the job folder")
    assert known.errno == errno.ENOSPC and known.filename == str(target)
    again = pickle.loads(pickle.dumps(known))  # it crosses into the flow from Ray actors
    assert (type(again), str(again), again.filename, again.errno) == (DiskFull, str(known), str(target), errno.ENOSPC)
    assert free.split()[1] in str(known)  # the free space, in the same unit
    # size unknown (0), or no more than what was already written: "more than" what was written
    assert "(this file needs more than 3.0 KB, " in str(disk_full(target, 0, 3_000))
    assert "(this file needs more than 3.0 KB, " in str(disk_full(target, 3_000, 3_000))
    assert "(this file needs 3.0 KB, " in str(disk_full(target, 3_000, 2_999))
    gone = disk_full(tmp_path / "no" / "such" / "f.tar", 10, 0)
    assert "this file needs 10 B, unknown free there" in str(gone)


def test_atomic_write_has_umask_permissions_and_replaces_the_whole_file(tmp_path):
    target = tmp_path / "a" / "b" / "f.json"  # parents are made
    old = os.umask(0o027)
    try:
        write_json(target, {"b": 1, "a": [1]})
    finally:
        os.umask(old)
    # the umask the module saw at import time (the process's), not mkstemp's owner-only 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~old
    assert target.read_text() == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'
    write_bytes(target, b"short")
    assert target.read_bytes() == b"short"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_errors_inside_an_atomic_write(tmp_path):
    target = tmp_path / "f.tar"
    write_bytes(target, b"old")
    # a full disk surfaces as the write's OSError(ENOSPC): it becomes the one-line DiskFull
    with pytest.raises(DiskFull, match=r"f\.tar: no space left on device \(this file needs more than 3\.0 KB, "):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 3000)
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(DiskFull, match=r"this file needs more than 0 B, "):  # size unknown, nothing written yet
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(DiskFull, match=r"this file needs 9\.0 KB, "):
        with atomic_path(target, 9000) as tmp:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    # other errors pass unchanged, as does a DiskFull raised further down
    with pytest.raises(PermissionError) as info:
        with atomic_path(target) as tmp:
            raise PermissionError(errno.EACCES, "denied")
    assert not isinstance(info.value, DiskFull)
    inner = DiskFull("inner: no space", "inner")
    with pytest.raises(DiskFull) as info:
        with atomic_path(target):
            raise inner
    assert info.value is inner
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.tar"]


def test_sweep_removes_only_temp_files_at_any_depth(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    temps = [tmp_path / f"{TMP_MARK}x.1", tmp_path / "a" / "b" / f"{TMP_MARK}y.tar.2"]
    for path in temps:
        path.write_bytes(b"partial")
    (tmp_path / "a" / f"{TMP_MARK}folder").mkdir()  # not a file: left alone
    (tmp_path / "a" / "keep.tar").write_bytes(b"done")
    assert remove_stale_temp_files(tmp_path) == 2
    assert not any(p.exists() for p in temps)
    assert (tmp_path / "a" / f"{TMP_MARK}folder").is_dir() and (tmp_path / "a" / "keep.tar").exists()
    assert remove_stale_temp_files(tmp_path) == 0


@pytest.fixture
def few_inodes(tmp_path):
    """A tmpfs with room for 8 files (skipped where mounting is not permitted)."""
    with mounted_tmpfs(tmp_path / "inodes", "size=1m,nr_inodes=8") as mnt:
        yield mnt


def test_no_file_can_be_created_at_all(few_inodes):
    made = 0
    with pytest.raises(OSError) as full:
        while made < 100:
            (few_inodes / f"f{made}").write_bytes(b"")
            made += 1
    assert full.value.errno == errno.ENOSPC and made < 8
    target = few_inodes / "report.html"
    with pytest.raises(DiskFull) as info:  # the temp file itself cannot be made
        write_bytes(target, b"")
    assert str(info.value).startswith(f"{target}: no space left on device (this file needs more than 0 B, ")
    assert not target.exists()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MB tmpfs (skipped where mounting is not permitted)."""
    with mounted_tmpfs(tmp_path / "mnt", "size=1m") as mnt:
        yield mnt


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the torn tar's __del__
def test_a_real_full_disk_keeps_the_old_shard_and_names_the_size(tiny_tmpfs):
    path = tiny_tmpfs / "colorize" / "ch-000000.tar"
    write_shard(path, [{"__key__": "p000000", "png": b"old"}])
    before = path.read_bytes()
    samples = [{"__key__": f"p{i:06d}", "png": os.urandom(700_000)} for i in range(3)]
    with pytest.raises(DiskFull) as info:
        write_shard(path, samples)
    message = str(info.value)
    assert message.startswith(f"{path}: no space left on device (this file needs 2.1 MB, "), message
    with pytest.raises(DiskFull, match=r"this file needs more than \d"):  # a generator: size unknown
        write_shard(path, (s for s in samples))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ch-000000.tar"]  # no temp left
    assert tarfile.open(path).getnames() == ["p000000.png"]
    del info
    gc.collect()  # the torn tar stream's __del__ warns here, under this test's filter
