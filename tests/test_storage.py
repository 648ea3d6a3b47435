"""Storage: decoding bad inputs, chapter/episode readers, shards, stats and manifest."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
import zlib

import cv2
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from chromaflow.conf import load_config
from chromaflow.storage.atomic import TMP_MARK, remove_stale_temp_files, write_bytes
from chromaflow.storage.images import ImageError, decode_image
from chromaflow.stages import ingest
from chromaflow.stages.registry import SHARD_SETS
from chromaflow.stages.runner import record_failure
from chromaflow.storage.job import JobDir
from chromaflow.storage.manifest import incomplete_pairs, read_manifest, write_manifest
from chromaflow.storage.shards import read_shard, read_stats, write_shard
from chromaflow.storage.sources import SourceError, list_chapter, natural_key
from chromaflow.storage.video import probe_video
from synthetic import PALETTES, draw_character


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- decoding --------------------------------------------------------------------------

def test_decode_rgba_composites_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent except one pixel
    rgba[0, 0, 3] = 255
    out = decode_image(png_bytes(Image.fromarray(rgba, "RGBA")), "a.png")
    assert out.shape == (4, 4, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_decode_16bit_png_scales_to_8bit():
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    ok, data = cv2.imencode(".png", arr)  # a real 16-bit grayscale PNG
    assert ok and Image.open(io.BytesIO(data.tobytes())).mode.startswith("I")
    out = decode_image(data.tobytes(), "deep.png")
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and 120 < out[1, 0, 0] < 135


def test_decode_cmyk_jpeg():
    img = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red in CMYK
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    out = decode_image(buf.getvalue(), "cmyk.jpg")
    assert out.shape == (6, 8, 3)
    r, g, b = out[3, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("data, expected", [
    (b"", "empty file"),
    (b"not an image at all", "not a readable image"),
])
def test_decode_garbage_names_file(data, expected):
    with pytest.raises(ImageError, match=rf"^page7\.png: {expected}"):
        decode_image(data, "page7.png")


def test_decode_truncated_png():
    data = png_bytes(Image.fromarray(draw_character(PALETTES["alice"])))
    with pytest.raises(ImageError, match=r"^cut\.png: corrupt or truncated"):
        decode_image(data[: len(data) // 2], "cut.png")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a huge size: must be refused without decoding."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_huge_image_refused_before_decoding():
    with pytest.raises(ImageError, match=r"^wide\.png: image is 25000x100, over the limit"):
        decode_image(_png_header_only(25000, 100), "wide.png", max_pixels=200_000_000, max_side=20000)
    with pytest.raises(ImageError, match=r"^huge\.png: image is .*over the limit.*refused before decoding"):
        decode_image(_png_header_only(30000, 30000), "huge.png", max_pixels=200_000_000, max_side=20000)


def test_pillows_guard_stays_unless_the_job_allows_more():
    big = _png_header_only(14000, 14000)  # 196 Mpx: over Pillow's hard limit (178,956,970)
    # At Pillow's limit, Pillow's own guard refuses it, from the header.
    with pytest.raises(ImageError, match=r"^big\.png: image is over the limit .*decompression bomb.*refused before"):
        decode_image(big, "big.png", max_pixels=178_956_970, max_side=20000)
    # A job that allows more is checked by its own limits instead, still before decoding:
    with pytest.raises(ImageError, match=r"^big\.png: image is 14000x14000, over the limit .*max_image_pixels=190000000"):
        decode_image(big, "big.png", max_pixels=190_000_000, max_side=20000)
    # 14000*14000*8 B + 256 MiB = 1.8 GiB > a 1 GiB page budget
    with pytest.raises(ImageError, match=r"^big\.png: a 14000x14000 page needs about 1\.7 GiB .*max_page_memory_mb=1024"):
        decode_image(big, "big.png", max_pixels=400_000_000, max_side=20000, max_memory=1 << 30)
    # ... and Pillow's guard is untouched for everything else in the process.
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(big))


def test_only_allowlisted_formats_are_decoded():
    rgb = Image.new("RGB", (8, 8), (10, 200, 30))
    for fmt in ("PPM", "ICO", "TGA"):  # images Pillow reads, but not page formats we accept
        buf = io.BytesIO()
        rgb.save(buf, format=fmt)
        with pytest.raises(ImageError, match=r"^x: not a readable image"):
            decode_image(buf.getvalue(), "x")
    for fmt in ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF"):
        buf = io.BytesIO()
        rgb.save(buf, format=fmt)
        assert decode_image(buf.getvalue(), f"x.{fmt}").shape == (8, 8, 3), fmt


# --- chapter listing ---------------------------------------------------------------------

def test_natural_sort():
    names = ["p10.png", "p2.png", "p1.png", "P3.png"]
    assert sorted(names, key=natural_key) == ["p1.png", "p2.png", "P3.png", "p10.png"]


def test_cbz_with_traversal_and_non_images(tmp_path):
    good = png_bytes(Image.fromarray(draw_character(PALETTES["bob"], colored=False)))
    cbz = tmp_path / "ch.cbz"
    with zipfile.ZipFile(cbz, "w") as zf:
        zf.writestr("p2.png", good)
        zf.writestr("p10.png", good)
        zf.writestr("../evil.png", good)
        zf.writestr("/abs.png", good)
        zf.writestr("ComicInfo.xml", "<x/>")
    listing = list_chapter(cbz)
    assert [p.name for p in listing.pages if p.problem is None] == ["p2.png", "p10.png"]
    refused = [p for p in listing.pages if p.problem]
    assert len(refused) == 2 and all("unsafe path in archive, refused" in p.problem for p in refused)
    assert len(listing.skipped) == 1 and "ComicInfo.xml: not an image, skipped" in listing.skipped[0]
    assert not (tmp_path.parent / "evil.png").exists()


def test_broken_video_is_one_line_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(SourceError, match=r"broken\.mp4: cannot open video|broken\.mp4: video has no decodable"):
        probe_video(bad)


# --- shards, ingest, manifest ------------------------------------------------------------

def test_shard_roundtrip_is_webdataset_and_deterministic(tmp_path):
    samples = [{"__key__": f"p{i:06d}", "png": b"\x89PNG fake", "json": json.dumps({"i": i}).encode()} for i in range(3)]
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    write_shard(a, samples)
    write_shard(b, samples)
    assert a.read_bytes() == b.read_bytes()
    assert [s["__key__"] for s in read_shard(a)] == ["p000000", "p000001", "p000002"]
    with tarfile.open(a) as tar:
        assert sorted(tar.getnames()[:2]) == ["p000000.json", "p000000.png"]
    # the stock WebDataset reader sees the same samples
    keys = [s["__key__"] for s in wds.WebDataset(str(a), shardshuffle=False)]
    assert keys == ["p000000", "p000001", "p000002"]
    with pytest.raises(ValueError, match="must not contain"):
        write_shard(tmp_path / "c.tar", [{"__key__": "a.b", "png": b""}])


def _job(tmp_path, name="ch") -> JobDir:
    job = JobDir(tmp_path / "out", name)
    job.root.mkdir(parents=True)
    job.write_info({"name": name, "kind": "chapter", "source": "", "refs": "", "config": {}})
    return job


def test_ingest_chapter_with_bad_pages(tmp_path):
    src = tmp_path / "chapter"
    src.mkdir()
    page = draw_character(PALETTES["alice"], colored=False)
    for i in (1, 2, 3, 5, 6):
        cv2.imwrite(str(src / f"{i}.png"), page)
    (src / "4.png").write_bytes(b"")  # zero-byte page
    (src / "10.png").write_bytes(png_bytes(Image.fromarray(page))[:300])  # truncated
    (src / "notes.txt").write_text("not a page")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    config = load_config(overrides=["job.shard_size=3"])
    job = _job(tmp_path)
    summary = ingest.run(job, src, config)
    assert summary.num_items == 7 and summary.num_shards == 3
    errors = {f["name"]: f["error"] for f in summary.failed}
    assert set(errors) == {"4.png", "10.png"}
    assert "4.png: empty file" in errors["4.png"] and "10.png: corrupt or truncated" in errors["10.png"]
    assert summary.skipped and "notes.txt" in summary.skipped[0]
    # reading order kept, bad pages leave gaps, shard membership by index
    keys = [[s["__key__"] for s in read_shard(job.shard_path("ingest", k))] for k in range(3)]
    assert keys == [["p000000", "p000001", "p000002"], ["p000004", "p000005"], []]
    meta = json.loads(read_shard(job.shard_path("ingest", 1))[0]["json"])
    assert meta == {"index": 4, "source": "5.png", "width": 320, "height": 448, "scene_id": 0, "kind": "chapter"}
    assert read_stats(job, "ingest", 1)["status"] == "partial"
    # inputs untouched
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    # unchanged re-ingest rewrites nothing
    mtimes = {k: job.shard_path("ingest", k).stat().st_mtime_ns for k in range(3)}
    again = ingest.run(job, src, config)
    assert again.shards_written == [] and len(again.failed) == 2
    assert mtimes == {k: job.shard_path("ingest", k).stat().st_mtime_ns for k in range(3)}


def test_manifest_rows_and_failures(tmp_path):
    config = load_config(overrides=["job.shard_size=2"])
    src = tmp_path / "one.png"
    cv2.imwrite(str(src), draw_character(PALETTES["bob"], colored=False))
    job = _job(tmp_path)
    ingest.run(job, src, config)
    info = job.read_info()
    info["num_shards"] = 2
    job.write_info(info)
    assert record_failure(job, "lines", 0, "boom") == 1
    assert record_failure(job, "lines", 0, "boom again") == 2
    rows = write_manifest(job, SHARD_SETS)
    stored = read_manifest(job)
    assert stored == rows and len(rows) == 2 * len(SHARD_SETS)
    by = {(r["shard"], r["stage"]): r for r in rows}
    assert by[(0, "ingest")]["status"] == "ok" and by[(0, "ingest")]["samples"] == 1
    assert by[(0, "lines")]["status"] == "failed" and by[(0, "lines")]["attempts"] == 2
    assert by[(0, "lines")]["error"] == "boom again"
    assert by[(1, "ingest")]["status"] == "missing"
    assert (0, "lines") in incomplete_pairs(rows) and (0, "ingest") not in incomplete_pairs(rows)


def test_atomic_write_leaves_no_temp(tmp_path):
    target = tmp_path / "x" / "f.bin"
    write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert not list(target.parent.glob(TMP_MARK + "*"))
    (target.parent / f"{TMP_MARK}f.bin.123").write_bytes(b"partial")
    assert remove_stale_temp_files(tmp_path) == 1

