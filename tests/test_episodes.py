"""Episodes: streamed video in and out (PyAV), audio copied, held drawings colored once,
truncated videos, scene cuts, flicker. Clips are generated here, tiny, so this stays fast;
memory and speed are measured in bench/bench_episodes.py, not here."""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from chromaflow.conf import load_config
from chromaflow.flows.colorize import prepare_job
from chromaflow.flows.summary import JobSummary
from chromaflow.models.colorizers import build_colorizer
from chromaflow.models.flicker import clip_flicker
from chromaflow.models.holds import HoldDetector, reuse_color
from chromaflow.models.scenes import make_detector, scene_ids
from chromaflow.stages import (colorize, export, ingest, instances, lines, palette_memory, references, retrieve,
                               upscale)
from chromaflow.storage.shards import read_shard
from chromaflow.storage.video import VideoReader
from synthetic import PALETTES, draw_character

SIZE = (128, 96)
FPS = 12


def write_clip(path: Path, drawings: list[np.ndarray], pts: list[int], audio_seconds: float = 0.0,
               faststart: bool = False, bframes: bool = True, subtitle: bytes = b"") -> Path:
    """H.264 at time base 1/FPS with the given pts (gaps = variable frame rate), an AAC
    440 Hz tone, and a mov_text subtitle shown from the start."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream("libx264", rate=FPS, options={"crf": "18", **({} if bframes else {"bf": "0"})})
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        tone = out.add_stream("aac", rate=48000, layout="mono") if audio_seconds else None
        if subtitle:
            text = out.add_stream("mov_text")
            text.codec_context.subtitle_header = b"[Script Info]\nScriptType: v4.00+\n"  # the encoder needs one
            cue = av.Packet(len(subtitle).to_bytes(2, "big") + subtitle)  # mov_text: 16-bit length + UTF-8
            cue.stream, cue.pts, cue.dts, cue.duration, cue.time_base = text, 0, 0, 1000, Fraction(1, 1000)
            out.mux(cue)
        for rgb, p in zip(drawings, pts):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = p, Fraction(1, FPS)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if tone is not None:
            n = int(48000 * audio_seconds)
            for start in range(0, n, 1024):
                t = np.arange(start, min(n, start + 1024)) / 48000
                chunk = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                                   format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, start
                for packet in tone.encode(chunk):
                    out.mux(packet)
            for packet in tone.encode():
                out.mux(packet)
    return path


def drawing(k: int) -> np.ndarray:
    """Line art of drawing k: the character steps 5 px right per drawing."""
    return draw_character(PALETTES["alice"], size=SIZE, dx=5 * k - 15, colored=False)


class CountingColorizer:
    """The real configured colorizer, counting how often it is asked."""

    def __init__(self, inner):
        self.inner, self.calls, self.name = inner, 0, getattr(inner, "name", "colorizer")

    def colorize(self, request):
        self.calls += 1
        return self.inner.colorize(request)


def run_job(tmp_path: Path, video: Path, refs: Path, overrides: list[str]) -> tuple:
    """The episode DAG as plain stage functions (no Prefect, no Ray)."""
    config = load_config(None, ["colorize.work_size=128", "lines.work_size=128", *overrides])
    job = prepare_job(str(video), str(refs), str(tmp_path / "out"), config, "episode")
    summary = ingest.run(job, video, config)
    references.run(job, str(refs), config)
    palette_memory.run(job, config)
    colorizer = CountingColorizer(build_colorizer(config))
    for shard in range(job.num_shards()):
        lines.run(job, shard, config)
        instances.run(job, shard, config)
        retrieve.run(job, shard, config)
        colorize.run(job, shard, config, colorizer)
        upscale.run(job, shard, config)
    return job, summary, colorizer, export.run(job, [])


def packets(path: Path, kind: str) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0] if kind == "audio" else container.streams.video[0]
        return [(p.pts, bytes(p)) for p in container.demux(stream) if p.size]


def video_pts(path: Path) -> tuple[list[int], Fraction, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(f.pts for f in container.decode(stream))
        return pts, stream.time_base, float(stream.duration * stream.time_base)


def test_clip_on_twos_keeps_audio_and_timing_and_colors_half_its_frames(tmp_path, refs_dir, monkeypatch):
    # 12 frames, each drawing held 2 frames, variable frame rate (pts gaps), 1.5 s of tone.
    pts = [0, 1, 2, 3, 5, 6, 8, 9, 10, 11, 14, 15]
    video = write_clip(tmp_path / "ep.mp4", [drawing(i // 2) for i in range(12)], pts, audio_seconds=16 / FPS)
    extracted = []  # the real line extraction, counted

    def counted(page, cfg, real=lines.extract_lines):
        extracted.append(page.shape)
        return real(page, cfg)

    monkeypatch.setattr(lines, "extract_lines", counted)
    job, _, colorizer, exported = run_job(tmp_path, video, refs_dir, ["job.shard_size=4"])

    assert colorizer.calls == 6 and len(extracted) == 6  # six distinct drawings: colored once, lines once
    colored = {s["__key__"]: s for k in range(3) for s in read_shard(job.shard_path("colorize", k))}
    for i in range(1, 12, 2):
        meta = json.loads(colored[f"f{i:06d}"]["json"])
        assert meta["reused_from"] == f"f{i - 1:06d}"
        assert colored[f"f{i:06d}"]["png"] == colored[f"f{i - 1:06d}"]["png"]
    final = {s["__key__"]: s["png"] for k in range(3) for s in read_shard(job.shard_path("upscale", k))}
    assert all(final[f"f{i:06d}"] == final[f"f{i - 1:06d}"] for i in range(1, 12, 2))
    assert exported["outputs"]["reuse"] == "reused 6 of 12 frames (50.0 %)"
    assert "reused 6 of 12 frames (50.0 %)" in (job.root / "report.html").read_text()
    assert "reused 6 of 12 frames (50.0 %)" in JobSummary("r", "n", "episode", outputs=exported["outputs"]).text()

    out = job.root / "episode.mp4"
    source_pts, source_tb, source_duration = video_pts(video)
    out_pts, out_tb, out_duration = video_pts(out)
    assert [p * out_tb for p in out_pts] == [p * source_tb for p in source_pts]  # VFR kept
    assert abs(out_duration - source_duration) < 1 / FPS
    # Audio: the same packets, byte for byte.
    assert packets(out, "audio") == packets(video, "audio")
    info = job.read_info()["episode_video"]
    assert info["encoder"] == "libx264" and info["audio"] == ["aac (copied)"] and info["crf"] == 18


def test_subtitle_stream_is_dropped_with_a_note_and_the_rest_kept(tmp_path, refs_dir, caplog):
    video = write_clip(tmp_path / "sub.mp4", [drawing(i // 2) for i in range(4)], list(range(4)),
                       audio_seconds=4 / FPS, subtitle=b"Where is everyone?")
    with av.open(str(video)) as container:  # the clip really holds the three streams
        assert sorted(s.type for s in container.streams) == ["audio", "subtitle", "video"]
    with caplog.at_level(logging.WARNING, logger="chromaflow"):
        job, *_ = run_job(tmp_path, video, refs_dir, [])
    assert any(str(video) in r.getMessage() and "subtitle (mov_text)" in r.getMessage() for r in caplog.records)
    note = "subtitle (mov_text) stream of the source not carried over"
    assert job.read_info()["episode_video"]["notes"] == [note]
    assert note in (job.root / "report.html").read_text()
    out = job.root / "episode.mp4"
    with av.open(str(out)) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "video"]
    assert packets(out, "audio") == packets(video, "audio")
    assert len(video_pts(out)[0]) == 4


def test_truncated_video_colors_the_readable_part_and_names_file_and_time_range(tmp_path, refs_dir, caplog):
    video = write_clip(tmp_path / "cut.mp4", [drawing(i) for i in range(16)], list(range(16)),
                       faststart=True, bframes=False)
    data = video.read_bytes()
    media = data.index(b"mdat")  # moov is in front (faststart): cut the frames' bytes at 80 %
    video.write_bytes(data[:media + int((len(data) - media) * 0.8)])
    readable = []
    with av.open(str(video)) as container:  # oracle: what plain FFmpeg decoding gets
        tb = container.streams.video[0].time_base
        for packet in container.demux(video=0):
            try:
                readable += [f.pts for f in packet.decode()]
            except av.error.InvalidDataError:
                pass  # the packet the cut went through
    assert 0 < len(readable) < 16
    with caplog.at_level(logging.WARNING):
        job, summary, _, exported = run_job(tmp_path, video, refs_dir, ["job.shard_size=8"])
    start = readable[-1] * tb + Fraction(1, FPS)
    message = f"cut.mp4: {16 - len(readable)} frame(s) from {float(start):.3f} s to {16 / FPS:.3f} s unreadable"
    assert any(message in r.getMessage() for r in caplog.records)
    assert any(message in line for line in summary.skipped)
    assert summary.num_items == len(readable)
    info = job.read_info()["episode_video"]
    assert info["colored"] == len(readable) and info["skipped_filled"] == 16 - len(readable)
    out_pts, tb, duration = video_pts(job.root / "episode.mp4")
    assert [p * tb for p in out_pts] == [Fraction(i, FPS) for i in range(16)]  # timing holds
    with av.open(str(job.root / "episode.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    last_good = frames[len(readable) - 1]
    assert all(np.abs(f - last_good).mean() < 2 for f in frames[len(readable):])  # the last good frame, held
    assert "unreadable" in (job.root / "report.html").read_text()


def test_hold_detector_exact_near_changed_and_pan():
    a = draw_character(PALETTES["bob"], size=(256, 192), colored=False)
    noisy = cv2.imdecode(cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_UNCHANGED)
    blink = a.copy()
    cv2.circle(blink, (100, 50), 6, (0, 0, 0), 2)  # a stroke that was not there
    panned = np.full_like(a, 255)
    panned[:, 7:] = a[:, :-7]  # the camera moved 7 px: the drawing slides right
    detector = HoldDetector()
    assert detector.check(0, a) is None
    assert detector.check(1, a).source == 0
    assert detector.check(2, noisy).source == 0
    assert detector.check(3, blink) is None  # a changed drawing is colored again
    detector.reset()
    detector.check(10, a)
    hold = detector.check(11, panned)
    assert hold is not None and hold.source == 10 and abs(hold.dx - 7) <= 1 and abs(hold.dy) <= 1


def test_reuse_color_moves_colors_by_the_pan():
    color = draw_character(PALETTES["alice"], size=(96, 64))
    lines_moved = np.full((64, 96), 255, np.uint8)
    lines_moved[:, :2] = 0  # this frame's own strokes in the revealed strip
    out = reuse_color(color, lines_moved, 5, 0)
    assert (out[:, 5:] == color[:, :-5]).all()
    assert (out[:, :2] == 0).all()  # the new frame's strokes are kept where nothing was colored
    assert (reuse_color(color, lines_moved, 0.2, 0) == color).all()


def _shot(scale: float, dx: int, boxes: int, t: int) -> np.ndarray:
    img = draw_character(PALETTES["alice"], size=(160, 120), dx=dx + t, scale=scale, colored=False)
    for k in range(boxes):
        cv2.rectangle(img, (10 + 30 * k, 80), (30 + 30 * k, 110), (0, 0, 0), 2)
    return img


@pytest.mark.parametrize("kind,threshold", [("content", 27.0), ("adaptive", 3.0)])
def test_scene_cut_between_line_art_shots(kind, threshold):
    frames = [_shot(1.0, 0, 0, t) for t in range(8)] + [_shot(0.6, -40, 4, t) for t in range(8)]
    assert scene_ids(frames, make_detector(kind, threshold, 4)) == [0] * 8 + [1] * 8


def test_video_reader_stride_keeps_source_timestamps(tmp_path):
    video = write_clip(tmp_path / "s.mp4", [drawing(i) for i in range(9)], list(range(9)))
    frames = list(VideoReader(video, stride=3))
    assert [f.frame_number for f in frames] == [0, 3, 6]
    assert [f.timestamp for f in frames] == [0.0, 0.25, 0.5]


def test_flicker_is_zero_when_still_and_the_color_change_when_a_region_toggles():
    color = draw_character(PALETTES["alice"], size=(160, 120))
    line_art = draw_character(PALETTES["alice"], size=(160, 120), colored=False)
    assert clip_flicker([color, color, color], [line_art] * 3).mean == 0.0
    other = color.copy()
    body = (color == PALETTES["alice"]["body"]).all(axis=2)
    other[body] = (40, 160, 60)
    de = deltaE_ciede2000(rgb2lab(np.uint8([[PALETTES["alice"]["body"]]])), rgb2lab(np.uint8([[[40, 160, 60]]])))
    result = clip_flicker([color, other, color], [line_art] * 3)
    assert result.mean == pytest.approx(float(de[0, 0]) * body.mean(), rel=0.02)
    assert result.reliable_share == 1.0


def test_held_outputs_serve_only_in_place_repeats_of_the_drawing_they_keep():
    from chromaflow.stages.held import HeldOutputs, in_place_source

    def item(**meta):
        return {"ingest": {"json": json.dumps(meta).encode()}}

    assert in_place_source({"hold_of": "f000001", "hold_offset": [0.0, 0.0]}) == "f000001"
    assert in_place_source({"hold_of": "f000001", "hold_offset": [3.0, 0.0]}) is None  # a pan
    assert in_place_source({"index": 2}) is None  # a new drawing
    held = HeldOutputs()
    assert held.repeat_of(item(hold_of="f000001", hold_offset=[0, 0])) is None  # nothing kept yet
    held.remember("f000001", item(index=1), {"png": b"A"})
    assert held.repeat_of(item(hold_of="f000001", hold_offset=[0, 0])) == {"png": b"A"}
    assert held.repeat_of(item(hold_of="f000001", hold_offset=[0, 2.5])) is None
    assert held.repeat_of(item(hold_of="f000000", hold_offset=[0, 0])) is None  # another drawing
    held.remember("f000002", item(hold_of="f000001", hold_offset=[0, 2.5]), {"png": b"pan"})  # a repeat: not kept
    assert held.repeat_of(item(hold_of="f000001", hold_offset=[0, 0])) == {"png": b"A"}
