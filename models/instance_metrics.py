"""Multi-instance evaluation metrics, as plain functions (pages with several characters).

Ground truth per page: instances as {"identity": name, "bbox": [x0, y0, x1, y1]} (the
visible part of each character, exclusive end), plus the page's colored ground truth.
Predictions: instances as (box, identity) with box the bounding box of the predicted mask.

- `instance_recall`: share of ground-truth instances matched one-to-one (Hungarian on box
  IoU) by a prediction with IoU >= 0.5.
- `instance_identity_accuracy`: share of predicted instances whose best-IoU ground-truth
  box has the predicted identity (a prediction overlapping no ground truth is wrong).
- consistency: for every identity and every part of it (a flat color of the character in
  the ground truth), the color the colorization gave that part on each page (median
  CIELAB of its pixels); the spread is the CIEDE2000 of each page's color to the part's
  median color over all pages. `consistency_de_median` / `consistency_de_p90` summarise
  those spreads over all (identity, part, page).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.color import deltaE_ciede2000

from chromaflow.models.metrics import delta_e, line_mask, to_lab

Box = tuple[int, int, int, int] | list[int]
MATCH_IOU = 0.5
# A ground-truth color covering at least this share of a character's box (lines and
# near-white excluded) is one of its parts.
MIN_PART_SHARE = 0.02
MIN_OWN_SHARE = 0.2  # when other boxes cover more of a box than this leaves, they are ignored
NEAR_WHITE_DELTA_E = 6.0  # paper: never a part (background inside boxes looks the same)


def box_iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(pred: list[Box], truth: list[Box]) -> np.ndarray:
    return np.array([[box_iou(p, t) for t in truth] for p in pred], np.float64).reshape(len(pred), len(truth))


def instance_matches(pred: list[Box], truth: list[Box], threshold: float = MATCH_IOU) -> list[tuple[int, int]]:
    """(prediction, ground truth) pairs of a one-to-one assignment maximizing IoU, kept
    when their IoU reaches `threshold`."""
    if not pred or not truth:
        return []
    iou = iou_matrix(pred, truth)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


def instance_recall(pred: list[Box], truth: list[Box], threshold: float = MATCH_IOU) -> float:
    """Share of ground-truth instances found (NaN without ground truth)."""
    if not truth:
        return float("nan")
    return len(instance_matches(pred, truth, threshold)) / len(truth)


def instance_precision(pred: list[Box], truth: list[Box], threshold: float = MATCH_IOU) -> float:
    """Share of predicted instances that match a ground-truth instance (NaN without predictions)."""
    if not pred:
        return float("nan")
    return len(instance_matches(pred, truth, threshold)) / len(pred)


def identity_hits(pred: list[tuple[Box, str]], truth: list[tuple[Box, str]]) -> list[bool]:
    """Per predicted instance: its best-IoU ground-truth box has the predicted identity."""
    hits = []
    for box, identity in pred:
        ious = [box_iou(box, t) for t, _ in truth]
        best = int(np.argmax(ious)) if ious else -1
        hits.append(best >= 0 and ious[best] > 0 and truth[best][1] == identity)
    return hits


def instance_identity_accuracy(pred: list[tuple[Box, str]], truth: list[tuple[Box, str]]) -> float:
    hits = identity_hits(pred, truth)
    return float(np.mean(hits)) if hits else float("nan")


def part_colors(output: np.ndarray, truth: np.ndarray, lines: np.ndarray, box: Box,
                others: list[Box] = ()) -> dict[tuple[int, int, int], np.ndarray]:
    """{ground-truth part color: CIELAB (L, a, b) median of the output over that part's
    pixels} inside one character's box. Pixels inside another character's box (unless that
    leaves under MIN_OWN_SHARE of the box), line pixels and near-white ground truth are
    left out."""
    x0, y0, x1, y1 = (int(v) for v in box)
    inside = np.zeros(truth.shape[:2], bool)
    inside[y0:y1, x0:x1] = True
    keep = inside.copy()
    for ox0, oy0, ox1, oy1 in others:
        keep[int(oy0):int(oy1), int(ox0):int(ox1)] = False
    if keep.sum() < MIN_OWN_SHARE * inside.sum():  # mostly inside a bigger box: keep the shared part
        keep = inside
    keep &= ~line_mask(lines)
    white = np.full((1, 1, 3), 255, np.uint8)
    keep &= delta_e(truth, np.broadcast_to(white, truth.shape)) >= NEAR_WHITE_DELTA_E
    if not keep.any():
        return {}
    px_truth, px_out = truth[keep], output[keep]
    keys = (px_truth[:, 0].astype(np.int64) << 16) | (px_truth[:, 1].astype(np.int64) << 8) | px_truth[:, 2]
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    parts = {}
    for k in np.flatnonzero(counts >= MIN_PART_SHARE * keep.sum()):
        lab = to_lab(px_out[inverse == k][None])[0]
        rgb = (int(uniq[k] >> 16), int((uniq[k] >> 8) & 255), int(uniq[k] & 255))
        parts[rgb] = np.median(lab, axis=0)
    return parts


def consistency_spreads(observations: dict[str, list[dict[tuple[int, int, int], np.ndarray]]]
                        ) -> dict[str, list[float]]:
    """{identity: [CIEDE2000 of one page's color of a part to that part's median color
    over pages]} from {identity: [part_colors of each page it appears on]}. Parts seen on
    a single page have no spread and are skipped."""
    spreads: dict[str, list[float]] = {}
    for identity, pages in observations.items():
        values: list[float] = []
        for part in sorted({p for page in pages for p in page}):
            labs = np.array([page[part] for page in pages if part in page])
            if len(labs) < 2:
                continue
            center = np.median(labs, axis=0)
            values += [float(v) for v in deltaE_ciede2000(labs, np.broadcast_to(center, labs.shape))]
        spreads[identity] = values
    return spreads


def consistency_summary(spreads: dict[str, list[float]]) -> dict[str, float]:
    """consistency_de_median / consistency_de_p90 over all identities' spreads."""
    values = np.array([v for vs in spreads.values() for v in vs], np.float64)
    if not len(values):
        return {"consistency_de_median": float("nan"), "consistency_de_p90": float("nan")}
    return {"consistency_de_median": float(np.median(values)), "consistency_de_p90": float(np.percentile(values, 90))}


def score_pages(pages: list[dict]) -> dict:
    """All multi-instance metrics of a set of pages. Each page: {"name", "line" (RGB line
    image), "color" (ground truth RGB), "truth": [{"identity", "bbox"}], "output" (the
    colorized page, same size), "instances": [(box, identity)] predicted, in page pixels}.
    Returns the summary (instance_recall, instance_identity_accuracy, instance_precision,
    flat_color_accuracy as the mean over pages, consistency_de_median / _p90, per-identity
    spread medians) and one row per page."""
    from chromaflow.models.metrics import flat_color_accuracy

    rows, observations, hits = [], {}, []
    found = truth_count = predicted = 0
    for page in pages:
        truth = [(t["bbox"], t["identity"]) for t in page["truth"]]
        matches = instance_matches([b for b, _ in page["instances"]], [b for b, _ in truth])
        page_hits = identity_hits(page["instances"], truth)
        found, truth_count, predicted = found + len(matches), truth_count + len(truth), predicted + len(page_hits)
        hits += page_hits
        fg, bg = flat_color_accuracy(page["output"], page["color"], page["line"])
        for k, (box, identity) in enumerate(truth):
            others = [b for j, (b, _) in enumerate(truth) if j != k]
            observations.setdefault(identity, []).append(part_colors(page["output"], page["color"], page["line"],
                                                                     box, others))
        rows.append({"page": page["name"], "truth": len(truth), "predicted": len(page_hits), "found": len(matches),
                     "identity_correct": int(sum(page_hits)), "flat_color_accuracy": round(fg, 4),
                     "background_accuracy": round(bg, 4), "identities": [i for _, i in page["instances"]]})
    spreads = consistency_spreads(observations)
    return {"instance_recall": found / max(1, truth_count),
            "instance_identity_accuracy": float(np.mean(hits)) if hits else float("nan"),
            "instance_precision": found / max(1, predicted),
            "flat_color_accuracy": float(np.nanmean([r["flat_color_accuracy"] for r in rows])) if rows else float("nan"),
            **consistency_summary(spreads),
            "consistency_de_median_per_identity": {k: float(np.median(v)) if v else float("nan")
                                                   for k, v in sorted(spreads.items())},
            "pages": rows}
