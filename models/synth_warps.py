"""Smooth random deformations of a drawing, for the evaluation: a page and its ground truth
are warped together, so that no reference overlays the page any more.

A warp is a similarity (rotation, scale, shift) plus a thin-plate spline through control
points on a grid, each moved at random: parts of the drawing (head, arms, body) bend and
shift against each other, as in a new pose. The spline is evaluated on a coarse grid and
interpolated, so warping a page costs two `cv2.remap` calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

GRID = 3  # control points per side
MAX_ROTATION = 12.0  # degrees
SCALE_RANGE = (0.88, 1.12)
MAX_SHIFT = 0.04  # share of the longest side
BEND = 0.03  # std of the control points' displacement, share of the longest side
COARSE_STEP = 8  # pixels between evaluated spline samples


@dataclass(frozen=True)
class Warp:
    """Backward map: output pixel (x, y) samples the source at (map_x, map_y)."""

    map_x: np.ndarray  # float32 H x W
    map_y: np.ndarray
    rotation: float
    scale: float

    def describe(self) -> dict:
        return {"rotation": round(self.rotation, 2), "scale": round(self.scale, 3)}


def random_warp(shape: tuple[int, int], rng: np.random.Generator) -> Warp:
    h, w = shape
    side = float(max(h, w))
    rotation = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    scale = float(rng.uniform(*SCALE_RANGE))
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * side
    # Control points on a grid inside the image; each moves independently.
    gy, gx = np.meshgrid(np.linspace(0.1, 0.9, GRID) * h, np.linspace(0.1, 0.9, GRID) * w, indexing="ij")
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    offsets = rng.normal(0.0, BEND * side, points.shape)
    spline = RBFInterpolator(points, offsets, kernel="thin_plate_spline", smoothing=0.0)
    ys = np.arange(0, h + COARSE_STEP, COARSE_STEP, dtype=np.float64)
    xs = np.arange(0, w + COARSE_STEP, COARSE_STEP, dtype=np.float64)
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    bend = spline(np.stack([cx.ravel(), cy.ravel()], axis=1)).reshape(len(ys), len(xs), 2)
    # Similarity about the image center, applied backwards (output -> source).
    a = np.deg2rad(rotation)
    dx, dy = cx - w / 2.0 - shift[0], cy - h / 2.0 - shift[1]
    sx = (np.cos(a) * dx - np.sin(a) * dy) / scale + w / 2.0 + bend[..., 0]
    sy = (np.sin(a) * dx + np.cos(a) * dy) / scale + h / 2.0 + bend[..., 1]
    size = (len(xs) * COARSE_STEP, len(ys) * COARSE_STEP)
    map_x = cv2.resize(sx.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[:h, :w]
    map_y = cv2.resize(sy.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)[:h, :w]
    return Warp(np.ascontiguousarray(map_x), np.ascontiguousarray(map_y), rotation, scale)


def apply_warp(img: np.ndarray, warp: Warp, nearest: bool = False) -> np.ndarray:
    """Warp an image (white outside the source): lines and pages linearly, flat-color
    ground truths with `nearest` so their colors stay exact."""
    border = (255, 255, 255) if img.ndim == 3 else 255
    return cv2.remap(img, warp.map_x, warp.map_y, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=border)
