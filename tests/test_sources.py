"""storage/sources.py: what counts as which source, which pages a chapter holds and in what
order, and what is refused by name without being read: archive names that leave the
archive however they are spelt (`..`, absolute, Windows backslashes, drive letters),
corrupt entries, files over the size limit (at the exact boundary), links."""

from __future__ import annotations

import hashlib
import os
import zipfile

import pytest

from chromaflow.storage.sources import (CHAPTER, EPISODE, PageReadError, ReadLimits, SourceError, file_fingerprint,
                                        list_chapter, source_kind)


def test_source_kind_by_folder_and_suffix(tmp_path):
    for name, kind in (("ep.MP4", EPISODE), ("ep.mkv", EPISODE), ("c.CBZ", CHAPTER), ("c.zip", CHAPTER),
                       ("p.PNG", CHAPTER), ("p.jpeg", CHAPTER)):
        (tmp_path / name).write_bytes(b"x")
        assert source_kind(tmp_path / name) == kind, name
    assert source_kind(tmp_path) == CHAPTER
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match=r"notes\.txt: unknown source type '\.txt' \(expected a folder, \.cbz/\.zip, "
                                          r"an image or a video\)"):
        source_kind(tmp_path / "notes.txt")
    with pytest.raises(SourceError, match=r"gone\.cbz: source does not exist"):
        source_kind(tmp_path / "gone.cbz")
    with pytest.raises(SourceError, match=r"notes\.txt: not a chapter source"):
        list_chapter(tmp_path / "notes.txt")


def _cbz(path, names: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in names.items():
            zf.writestr(name, data)
    return path


PNG = b"\x89PNG\r\n\x1a\n" + b"page" * 10


def test_archive_names_that_leave_the_archive_are_refused_however_spelt(tmp_path):
    # Python's zipfile keeps backslashes in names on POSIX; Windows tools write them, and a
    # Windows reader would take them as separators: refused like their '/' spellings.
    unsafe = ["..\\..\\evil.png", "pages\\..\\..\\evil2.png", "\\abs.png", "C:\\Windows\\x.png", "C:/x.png",
              "d:evil.png", "x:y/p3.png", "C:", "../up.png", "/root.png", "a/../../b.png"]
    safe = ["p1.png", "pages\\p2.png", "ok..name.png", "ab:c.png", "x"]
    cbz = _cbz(tmp_path / "c.cbz", {name: PNG for name in unsafe + safe})
    listing = list_chapter(cbz)
    problems = {p.name: p.problem for p in listing.pages}
    for name in unsafe:
        assert problems[name] == f"{cbz}!{name}: unsafe path in archive, refused", name
    for name in safe[:-1]:
        assert problems[name] is None, name
    assert listing.skipped == [f"{cbz}!x: not an image, skipped"]
    pages = listing.pages
    assert all(p.read is None for p in pages if p.problem)  # nothing of them is read
    assert not list(tmp_path.parent.glob("evil*"))


def test_archive_base_names_are_taken_after_backslashes(tmp_path):
    cbz = _cbz(tmp_path / "c.cbz", {"pages\\._p1.png": b"resource fork", "pages\\p1.png": PNG,
                                    "__MACOSX/pages/._p1.png": b"x", "pages\\notes.png.txt": b"x",
                                    "pages\\.hidden\\p9.png": PNG})
    listing = list_chapter(cbz)
    assert [p.name for p in listing.pages] == ["pages\\.hidden\\p9.png", "pages\\p1.png"]
    assert listing.skipped == [f"{cbz}!pages\\notes.png.txt: not an image, skipped"]


def test_archive_pages_in_natural_order_folders_skipped_and_read_back(tmp_path):
    cbz = tmp_path / "c.cbz"
    with zipfile.ZipFile(cbz, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ch/", b"")
        for i in (10, 2, 1):
            zf.writestr(f"ch/p{i}.png", PNG + bytes([i]))
        zf.writestr("ch/.DS_Store.png", b"x")
    pages = list_chapter(cbz).pages
    assert [(p.index, p.name) for p in pages] == [(0, "ch/p1.png"), (1, "ch/p2.png"), (2, "ch/p10.png")]
    assert pages[2].read() == PNG + bytes([10])
    assert pages[2].sha256() == hashlib.sha256(PNG + bytes([10])).hexdigest()


def test_corrupt_cbz_as_a_whole_and_a_corrupt_entry(tmp_path):
    broken = tmp_path / "broken.cbz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SourceError, match=r"broken\.cbz: not a readable zip/cbz archive"):
        list_chapter(broken)
    cbz = tmp_path / "c.cbz"
    with zipfile.ZipFile(cbz, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("p1.png", PNG * 50)
        zf.writestr("p2.png", PNG * 50)
    data = bytearray(cbz.read_bytes())
    with zipfile.ZipFile(cbz) as zf:
        info = zf.getinfo("p1.png")
    start = info.header_offset + 30 + len("p1.png")
    data[start + 5:start + 15] = b"\xff" * 10  # flipped compressed bytes: bad data or bad CRC
    cbz.write_bytes(bytes(data))
    first, second = list_chapter(cbz).pages
    assert first.problem is None  # the directory is fine; the damage shows when reading
    with pytest.raises(PageReadError, match=rf"^{cbz}!p1\.png: corrupt archive entry"):
        first.read()
    with pytest.raises(PageReadError, match=rf"^{cbz}!p1\.png: corrupt archive entry"):
        first.sha256()
    assert second.read() == PNG * 50  # the rest of the chapter reads


def test_size_limit_at_the_exact_boundary(tmp_path):
    limit = 1 << 20
    folder = tmp_path / "ch"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"a" * limit)
    (folder / "b.png").write_bytes(b"b" * (limit + 1))
    a, b = list_chapter(folder, ReadLimits(max_bytes=limit)).pages
    assert a.problem is None and len(a.read()) == limit and a.sha256() == hashlib.sha256(b"a" * limit).hexdigest()
    assert b.problem == (f"{folder / 'b.png'}: file is {limit + 1} bytes, over the limit (job.max_file_mb=1); "
                         f"refused before reading")
    with pytest.raises(PageReadError, match=rf"b\.png: holds more than {limit} bytes \(job\.max_file_mb\); refused"):
        b.read()  # the streaming cap, for a file that grew after listing
    cbz = _cbz(tmp_path / "c.cbz", {"a.png": b"a" * (2 << 20), "b.png": b"b" * ((2 << 20) + 1)})
    a, b = list_chapter(cbz, ReadLimits(max_bytes=2 << 20)).pages
    assert a.problem is None and len(a.read()) == 2 << 20
    assert b.problem == (f"{cbz}!b.png: entry is {(2 << 20) + 1} bytes uncompressed, over the limit "
                         f"(job.max_file_mb=2); refused before decompressing")


def test_folder_listing_order_hidden_files_links_and_one_image(tmp_path):
    folder = tmp_path / "ch"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    for name in ("p10.png", "P2.PNG", "sub/p1.png", ".hidden.png", ".git/p0.png"):
        (folder / name).write_bytes(PNG)
    (folder / "notes.txt").write_text("x")
    (folder / "broken.png").symlink_to(folder / "nowhere.png")
    (tmp_path / "other").mkdir()
    (folder / "linked").symlink_to(tmp_path / "other", target_is_directory=True)
    listing = list_chapter(folder)
    assert [(p.index, p.name) for p in listing.pages] == [(0, "broken.png"), (1, "P2.PNG"), (2, "p10.png"),
                                                          (3, "sub/p1.png")]
    assert listing.pages[0].problem == f"{folder / 'broken.png'}: broken symlink or not a regular file; skipped"
    assert [p.problem for p in listing.pages[1:]] == [None, None, None]
    assert sorted(listing.skipped) == [f"{folder / 'linked'}: symlinked folder, not followed",
                                       f"{folder / 'notes.txt'}: not an image, skipped"]
    one = list_chapter(folder / "p10.png").pages
    assert [(p.index, p.name, p.problem) for p in one] == [(0, "p10.png", None)] and one[0].read() == PNG


def test_archive_links_resolve_through_dot_segments_only_inside(tmp_path):
    cbz = tmp_path / "c.cbz"
    with zipfile.ZipFile(cbz, "w") as zf:
        zf.writestr("a/b/p1.png", PNG)
        for name, target in (("a/b/p2.png", "./p1.png"), ("a/c/p3.png", "../b/p1.png"), ("a/p4.png", "/a/b/p1.png"),
                             ("a/p5.png", "../../p1.png"), ("a/p6.png", "b/p2.png"), ("a/p7.png", "b//p1.png")):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
        for name, target in (("a/p8.png", "x" * 4097), ("a/p9.png", "./" * 2044 + "b/p1.png"),  # 4097, 4096 bytes
                             ("a/p10.png", "b/missing.png")):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    pages = {p.name: p for p in list_chapter(cbz, ReadLimits(follow_symlinks=True)).pages}
    for name in ("a/b/p2.png", "a/c/p3.png", "a/p7.png", "a/p9.png"):
        assert pages[name].problem is None and pages[name].read() == PNG, name
    for name, target in (("a/p4.png", "/a/b/p1.png"), ("a/p5.png", "../../p1.png"), ("a/p6.png", "b/p2.png"),
                         ("a/p10.png", "b/missing.png")):
        assert pages[name].problem == f"{cbz}!{name}: symlink to {target}, outside the archive or not a page; refused"
    assert pages["a/p8.png"].problem == f"{cbz}!a/p8.png: symlink entry too long; refused"


def test_file_fingerprint_hashes_pages_and_stamps_videos(tmp_path):
    page = tmp_path / "p.png"
    page.write_bytes(b"x" * (3 << 20))
    assert file_fingerprint(page) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()
    video = tmp_path / "ep.MKV"
    video.write_bytes(b"frames")
    os.utime(video, ns=(1, 1_000_000_007))
    assert file_fingerprint(video) == hashlib.sha256(b"ep.MKV:6:1000000007").hexdigest()


def test_folder_links_out_of_the_chapter_are_refused_unless_followed(tmp_path):
    folder = tmp_path / "ch"
    folder.mkdir()
    (folder / "p1.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG + b"secret")
    (folder / "p2.png").symlink_to(tmp_path / "secret.png")
    (folder / "p3.png").symlink_to("p1.png")  # inside: read
    pages = list_chapter(folder).pages  # the default limits: a default job's (links not followed)
    assert [p.problem for p in pages] == [None, f"{folder / 'p2.png'}: symlink to {tmp_path / 'secret.png'}, outside "
                                          f"the chapter folder; refused (job.follow_symlinks is off)", None]
    assert pages[2].read() == PNG
    followed = list_chapter(folder, ReadLimits(follow_symlinks=True)).pages
    assert [p.problem for p in followed] == [None, None, None] and followed[1].read() == PNG + b"secret"


def test_default_read_limits_are_the_default_jobs():
    from chromaflow.conf import load_config

    job = load_config().job
    assert ReadLimits() == ReadLimits(max_bytes=job.max_file_mb << 20, follow_symlinks=job.follow_symlinks)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):  # one instance is every caller's default argument
        ReadLimits().follow_symlinks = True
