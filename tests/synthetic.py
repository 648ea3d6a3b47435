"""Synthetic line art for tests: simple 'characters' (head, eyes, body) whose regions have
fixed colors per identity, drawn as black line art or as colored images. Generated in
each test, so the suite needs no external data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PALETTES = {
    "alice": {"head": (250, 205, 170), "eyes": (40, 90, 200), "body": (200, 40, 60)},
    "bob": {"head": (160, 110, 80), "eyes": (30, 140, 60), "body": (40, 60, 190)},
}


def draw_character(palette: dict, size: tuple[int, int] = (320, 448), dx: int = 0, dy: int = 0,
                   scale: float = 1.0, colored: bool = True, frame: bool = True) -> np.ndarray:
    """RGB uint8 page with one character; colored=False gives black-on-white line art."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    cx, cy = w // 2 + dx, int(h * 0.35) + dy
    r = int(min(w, h) * 0.22 * scale)
    body = (cx - int(r * 1.1), cy + r + 4, cx + int(r * 1.1), min(h - 12, cy + int(r * 3.2)))
    eye_r = max(3, r // 5)
    eyes = [(cx - r // 2, cy - r // 6), (cx + r // 2, cy - r // 6)]
    ink = (0, 0, 0)
    if colored:
        cv2.rectangle(img, body[:2], body[2:], palette["body"], -1)
        cv2.circle(img, (cx, cy), r, palette["head"], -1)
        for e in eyes:
            cv2.circle(img, e, eye_r, palette["eyes"], -1)
    t = max(2, r // 18)
    cv2.rectangle(img, body[:2], body[2:], ink, t)
    cv2.circle(img, (cx, cy), r, ink, t, lineType=cv2.LINE_AA)
    for e in eyes:
        cv2.circle(img, e, eye_r, ink, t, lineType=cv2.LINE_AA)
    if frame:
        cv2.rectangle(img, (4, 4), (w - 5, h - 5), ink, 3)
    return img


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def make_refs(root: Path, identities=("alice", "bob")) -> Path:
    for name in identities:
        for i, (dx, scale) in enumerate([(0, 1.0), (15, 0.85)]):
            # References are character art without panel frames (model sheets, colored frames).
            write_png(root / name / f"{name}_{i}.png", draw_character(PALETTES[name], dx=dx, scale=scale, frame=False))
    return root


def make_chapter(root: Path, num_pages: int, size=(320, 448)) -> Path:
    names = list(PALETTES)
    for i in range(num_pages):
        palette = PALETTES[names[i % len(names)]]
        page = draw_character(palette, size=size, dx=(i % 3) * 8 - 8, dy=(i % 2) * 6, scale=0.9 + 0.05 * (i % 3),
                              colored=False)
        write_png(root / f"page{i + 1}.png", page)
    return root


def make_video(path: Path, num_frames: int, size=(160, 120), fps: float = 12.0, cut_at: int | None = None) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(num_frames):
        palette = PALETTES["alice"] if cut_at is None or i < cut_at else PALETTES["bob"]
        frame = draw_character(palette, size=size, dx=i % 5, colored=cut_at is not None and i >= cut_at)
        if cut_at is not None and i >= cut_at:
            frame[:] = 255 - frame // 2  # a visibly different shot
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path
