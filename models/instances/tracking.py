"""Episodes: the instances of a scene followed from frame to frame (tracks).

Within a shot characters move little, so an instance of frame t+1 is the instance of
frame t that, moved by the optical flow between the frames, overlaps it most and looks
like it. The link cost of (previous instance, current instance) is

    (1 - IoU(previous mask warped by the flow, current mask)) + appearance_weight x (1 - cosine)

with the cosine of their retrieval embeddings (None: not used). Frames are linked by a
one-to-one assignment (Hungarian) of that cost; a current instance whose best link costs
more than `max_cost` starts a new track. The flow (OpenCV Farneback) runs on the line art
at FLOW_SIZE, where it is cheap; masks are compared there too.

A track's identity is then decided from all its frames (models/instances/assignment.py
`track_scores`: the majority of its frames' confident votes), so an identity sticks to its
character through the shot even when a frame alone is ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from chromaflow.storage.images import resize_longest

FLOW_SIZE = 160  # longest side the flow is computed and masks compared at


@dataclass
class Observation:
    mask: np.ndarray  # bool, the instance's mask in the frame (any size; all frames alike)
    vector: np.ndarray | None = None  # appearance embedding (unit norm), or None


def small_mask(mask: np.ndarray) -> np.ndarray:
    return resize_longest(mask.astype(np.uint8) * 255, FLOW_SIZE, cv2.INTER_AREA) >= 128


def backward_flow(prev_lines: np.ndarray, next_lines: np.ndarray) -> np.ndarray:
    """Flow from the next frame back to the previous one at FLOW_SIZE (H x W x 2): the
    previous frame's content at p + flow(p) is what the next frame shows at p. Line art
    is blurred first, so thin strokes give the flow something smooth to follow."""
    a = cv2.GaussianBlur(resize_longest(next_lines, FLOW_SIZE), (0, 0), 1.5)
    b = cv2.GaussianBlur(resize_longest(prev_lines, FLOW_SIZE), (0, 0), 1.5)
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def warp(mask: np.ndarray, flow: np.ndarray | None) -> np.ndarray:
    if flow is None:
        return mask
    h, w = mask.shape
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    moved = cv2.remap(mask.astype(np.uint8), grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_NEAREST,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return moved > 0


def link_cost(prev: Observation, cur: Observation, flow: np.ndarray | None, appearance_weight: float) -> float:
    a, b = warp(small_mask(prev.mask), flow), small_mask(cur.mask)
    union = (a | b).sum()
    cost = 1.0 - ((a & b).sum() / union if union else 0.0)
    if prev.vector is not None and cur.vector is not None:
        cost += appearance_weight * (1.0 - float(np.dot(prev.vector, cur.vector)))
    return cost


def track_instances(frames: list[list[Observation]], lines: list[np.ndarray] | None = None,
                    max_cost: float = 0.8, appearance_weight: float = 0.5) -> list[list[int]]:
    """Track id (0, 1, ...) of every instance of every frame, in the frames' order.
    `lines`: the frames' line art (uint8) for the optical flow; None links without flow."""
    ids: list[list[int]] = []
    next_id = 0
    for t, observations in enumerate(frames):
        current = [-1] * len(observations)
        if t > 0 and frames[t - 1] and observations:
            flow = backward_flow(lines[t - 1], lines[t]) if lines is not None else None
            cost = np.array([[link_cost(p, c, flow, appearance_weight) for c in observations]
                             for p in frames[t - 1]])
            for r, c in zip(*linear_sum_assignment(cost)):
                if cost[r, c] <= max_cost:
                    current[c] = ids[t - 1][r]
        for i, track in enumerate(current):
            if track < 0:
                current[i], next_id = next_id, next_id + 1
        ids.append(current)
    return ids
