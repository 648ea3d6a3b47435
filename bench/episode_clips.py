"""Generated line-art episodes for the episode benchmarks (bench/bench_episodes.py).

A shot is a background (rectangles and lines, random per shot) and one or two characters
(head, eyes, mouth, body); characters walk and blink, the camera may pan. Drawings are held
`hold` frames (animation "on twos" = 2), so exact repeats are known. Cuts are where a shot
changes; `make_episode` returns the frames' generator and the true cut positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np


@dataclass
class Shot:
    frames: int
    seed: int
    pan: float  # background pixels per drawing (camera pan), share of the width
    characters: int


# Ground-truth colors (colored=True): each object is filled, then its strokes are drawn,
# object by object, so the line art is exactly the strokes of the colored frame.
SKIN, HAIR_EYES, SHIRT = (250, 205, 170), (40, 90, 200), (200, 40, 60)


def _draw_character(img: np.ndarray, cx: int, cy: int, r: int, blink: bool, t: int, colored: bool) -> None:
    ink, th = (0, 0, 0), max(1, r // 14)
    paper = (255, 255, 255)
    cv2.rectangle(img, (cx - r, cy + r + 2), (cx + r, cy + int(2.8 * r)), SHIRT if colored else paper, -1)
    cv2.rectangle(img, (cx - r, cy + r + 2), (cx + r, cy + int(2.8 * r)), ink, th, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), r, SKIN if colored else paper, -1)
    cv2.circle(img, (cx, cy), r, ink, th, cv2.LINE_AA)
    for ex in (cx - r // 2, cx + r // 2):
        if blink:
            cv2.line(img, (ex - r // 6, cy - r // 6), (ex + r // 6, cy - r // 6), ink, th, cv2.LINE_AA)
        else:
            cv2.circle(img, (ex, cy - r // 6), max(2, r // 6), HAIR_EYES if colored else paper, -1)
            cv2.circle(img, (ex, cy - r // 6), max(2, r // 6), ink, th, cv2.LINE_AA)
    mouth = max(1, (t % 3) * r // 10)
    cv2.ellipse(img, (cx, cy + r // 2), (r // 3, mouth), 0, 0, 360, ink, th, cv2.LINE_AA)


def shot_frame(shot: Shot, drawing: int, size: tuple[int, int], colored: bool = False) -> np.ndarray:
    """Drawing number `drawing` of a shot as RGB line art (colored=True: its ground truth)."""
    w, h = size
    rng = np.random.default_rng(shot.seed)
    img = np.full((h, w, 3), 255, np.uint8)
    pan = int(round(shot.pan * w * drawing))
    th = max(1, w // 200)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(-w // 2, w)), int(rng.integers(0, h))
        bw, bh = int(rng.integers(w // 10, w // 3)), int(rng.integers(h // 10, h // 3))
        fill = tuple(int(v) for v in rng.integers(120, 240, 3))
        cv2.rectangle(img, (x0 - pan, y0), (x0 - pan + bw, y0 + bh), fill if colored else (255, 255, 255), -1)
        cv2.rectangle(img, (x0 - pan, y0), (x0 - pan + bw, y0 + bh), (0, 0, 0), th, cv2.LINE_AA)
    horizon = int(rng.integers(h // 2, h - h // 8))
    cv2.line(img, (0, horizon), (w, horizon), (0, 0, 0), th, cv2.LINE_AA)
    for c in range(shot.characters):
        r = int(min(w, h) * rng.uniform(0.08, 0.16))
        cx = int(rng.uniform(0.25, 0.75) * w) + (drawing * r // 8) * (1 if c == 0 else -1) - pan
        cy = int(rng.uniform(0.25, 0.45) * h)
        _draw_character(img, cx, cy, r, blink=drawing % 7 == 3, t=drawing, colored=colored)
    return img


def make_shots(total_frames: int, seed: int = 0, min_len: int = 12, max_len: int = 48,
               pans: bool = True) -> list[Shot]:
    rng = np.random.default_rng(seed)
    shots, left = [], total_frames
    while left > 0:
        n = min(left, int(rng.integers(min_len, max_len + 1)))
        pan = float(rng.choice([0.0, 0.0, 0.01])) if pans else 0.0
        shots.append(Shot(n, int(rng.integers(1 << 30)), pan, int(rng.integers(1, 3))))
        left -= n
    return shots


def episode_frames(shots: list[Shot], size: tuple[int, int], hold: int = 2,
                   colored: bool = False) -> Iterator[np.ndarray]:
    """Frames in order; each drawing is shown `hold` frames."""
    for shot in shots:
        for t in range(shot.frames):
            yield shot_frame(shot, t // hold, size, colored)


def cut_positions(shots: list[Shot]) -> list[int]:
    starts, n = [], 0
    for shot in shots[:-1]:
        n += shot.frames
        starts.append(n)
    return starts


def write_video(path: Path, frames: Iterator[np.ndarray], size: tuple[int, int], fps: int = 24,
                audio: bool = True, crf: int = 20) -> Path:
    """H.264 MP4 (+ an AAC 440 Hz tone as long as the video), written frame by frame."""
    w, h = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        tone = out.add_stream("aac", rate=48000) if audio else None
        if tone is not None:
            tone.layout = "mono"
        n = 0
        for n, rgb in enumerate(frames, 1):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = n - 1
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if tone is not None:
            samples = int(48000 * n / fps)
            for start in range(0, samples, 1024):
                t = np.arange(start, min(samples, start + 1024)) / 48000
                chunk = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                                   format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, start
                for packet in tone.encode(chunk):
                    out.mux(packet)
            for packet in tone.encode():
                out.mux(packet)
    return path
