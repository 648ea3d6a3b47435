"""Scene cuts: where a new shot starts, so identity tracking and the temporal colorizer
restart there.

`SceneTracker` is fed frames in order and hands them back with a scene id. Detectors are
PySceneDetect's: `content` (ContentDetector: the change of luma and edges between two
frames against a fixed threshold) and `adaptive` (AdaptiveDetector: the same score against
its rolling average over the neighbouring frames, which reports a cut `window_width`
frames late, so the tracker holds that many frames back). The hand-made HSV histogram
detector they replace found none of 40 cuts between line-art shots (bench/bench_episodes.py,
docs/benchmarks.md): line art has no hue, and two shots' histograms are nearly the same.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterator

import cv2
import numpy as np

DETECT_WIDTH = 256  # frames are scaled to this width before detection (as PySceneDetect does)
ADAPTIVE_WINDOW = 2
# PySceneDetect's score weights (hue, saturation, luma, edges). Its default ignores edges,
# and line art (white paper, black strokes) has no hue and little luma change between two
# shots: edges and luma separate line-art cuts (bench/bench_episodes.py).
EDGE_WEIGHTS = (0.0, 0.0, 1.0, 1.0)


def _small(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if w <= DETECT_WIDTH:
        return rgb
    return cv2.resize(rgb, (DETECT_WIDTH, max(1, round(h * DETECT_WIDTH / w))), interpolation=cv2.INTER_AREA)


class SceneDetectCuts:
    """PySceneDetect's content or adaptive detector, fed frame by frame."""

    def __init__(self, kind: str, threshold: float, min_scene_len: int):
        from scenedetect.detectors import AdaptiveDetector, ContentDetector
        from scenedetect.scene_detector import FlashFilter

        weights = ContentDetector.Components(*EDGE_WEIGHTS)
        if kind == "content":
            # SUPPRESS: a cut needs min_scene_len frames since the last one and is reported at
            # once (MERGE would hold frames back until a flash is over).
            self.detector = ContentDetector(threshold=threshold, min_scene_len=min_scene_len, weights=weights,
                                            filter_mode=FlashFilter.Mode.SUPPRESS)
            self.lag = 0
        else:
            self.detector = AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_scene_len,
                                             window_width=ADAPTIVE_WINDOW, weights=weights)
            self.lag = ADAPTIVE_WINDOW + 1

    def push(self, number: int, rgb: np.ndarray) -> list[int]:
        bgr = np.ascontiguousarray(_small(rgb)[:, :, ::-1])
        return [int(c) for c in self.detector.process_frame(number, bgr)]

    def finish(self, number: int) -> list[int]:
        return [int(c) for c in self.detector.post_process(number)]


def make_detector(kind: str, threshold: float, min_scene_len: int = 4) -> SceneDetectCuts:
    if kind not in ("content", "adaptive"):
        raise ValueError(f"unknown scene detector {kind!r} (content, adaptive)")
    return SceneDetectCuts(kind, threshold, min_scene_len)


class SceneTracker:
    """Frames in, (item, scene_id) out, in order, at most `detector.lag` frames late."""

    def __init__(self, detector):
        self.detector = detector
        self._waiting: deque[tuple[int, Any]] = deque()
        self._cuts: set[int] = set()
        self._scene = 0
        self._number = -1

    def feed(self, item: Any, rgb: np.ndarray) -> Iterator[tuple[Any, int]]:
        self._number += 1
        self._cuts.update(self.detector.push(self._number, rgb))
        self._waiting.append((self._number, item))
        while len(self._waiting) > self.detector.lag:
            yield self._release()

    def finish(self) -> Iterator[tuple[Any, int]]:
        self._cuts.update(self.detector.finish(self._number + 1))
        while self._waiting:
            yield self._release()

    def _release(self) -> tuple[Any, int]:
        number, item = self._waiting.popleft()
        if number in self._cuts and number > 0:
            self._scene += 1
        return item, self._scene


def scene_ids(frames: list[np.ndarray], detector) -> list[int]:
    """Scene id per frame of an in-memory clip (benchmarks, tests)."""
    tracker = SceneTracker(detector)
    out = [scene for i, frame in enumerate(frames) for _, scene in tracker.feed(i, frame)]
    return out + [scene for _, scene in tracker.finish()]
