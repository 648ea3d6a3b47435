"""Where each pixel of the page lies in a reference: a global similarity refined by a dense,
non-rigid flow, and how well the two drawings agree around every pixel.

1. **Global, partial, multi-scale.** Frames (center, size) map the reference onto the
   page. The search starts from the ink boxes and tries references scaled from
   COARSE_SCALES of the box fit at positions over the page's drawing, so a head close-up
   finds the head of a full-body page and a full-body reference its close-up. The cost is
   a symmetric clipped chamfer distance of the strokes, counted only where the two
   overlap, plus a penalty for page strokes the reference does not cover; a small grid
   around the best frame refines it (ALIGN_SCALES, ALIGN_SHIFTS), then the angle
   (ALIGN_ANGLES).
2. **Dense.** OpenCV's DIS optical flow between blurred stroke images of the page and of
   the globally mapped reference follows what one similarity cannot: bent limbs, a turned
   head, a warped scan (Kroeger et al. 2016; BasicPBC warps references the same way
   before matching, with a learned flow).
3. **Local fit.** After the flow, the share of strokes within FIT_TOLERANCE of a stroke of
   the other drawing, averaged over a window: near 1 where the reference is drawn like the
   page around that pixel, near 0 where it is not (another pose of that arm) or where the
   reference does not reach, and lower where the flow had to move far (FLOW_TRUST). Votes
   are weighted by it, so a reference only speaks where it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Center x, center y, size, and (reference frames) the angle in radians by which page
# coordinates turn on their way into the reference.
Frame = tuple[float, ...]

ALIGN_SCALES = (0.85, 0.92, 1.0, 1.08, 1.17)
ALIGN_SHIFTS = (-0.12, -0.06, 0.0, 0.06, 0.12)
ALIGN_ANGLES = (-15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0)  # degrees
COARSE_SCALES = (0.4, 0.55, 0.75, 1.0, 1.35, 1.8, 2.5)  # reference size / page drawing size
COARSE_POSITIONS = 5  # per axis, over the page's ink box
ALIGN_POINTS = 600
ALIGN_CLIP = 0.05  # chamfer distances are clipped at this share of the page's drawing size
UNCOVERED_COST = 0.5  # cost (share of the clip) of a page stroke the reference does not cover
FLOW_SIZE = 320  # longest side the flow is computed at
FLOW_BLUR = 0.012  # stroke images are blurred by this share of the longest side
FIT_TOLERANCE = 0.012  # a stroke fits when one of the other drawing lies this close (share)
FIT_WINDOW = 0.05  # local fit window (Gaussian sigma, share of the longest side)
FLOW_TRUST = 0.1  # a pixel the flow moved this far (share of the longest side) keeps 1/e of its fit


@dataclass
class Registration:
    map_x: np.ndarray  # float32 H x W (page pixels): reference x of every page pixel
    map_y: np.ndarray
    fit: np.ndarray  # float32 H x W in [0, 1]: local agreement of the strokes after the map
    global_fit: float  # [0, 1]: agreement of the global alignment over the overlap
    page_frame: Frame
    ref_frame: Frame

    def sample(self, ref_image: np.ndarray, fill) -> np.ndarray:
        """A reference image (labels, colors) seen from the page, nearest neighbor."""
        return cv2.remap(ref_image, self.map_x, self.map_y, cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        h, w = mask.shape
        return 0, 0, w, h
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_frame(box: tuple[int, int, int, int]) -> Frame:
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0, float(max(x1 - x0, y1 - y0, 1))


def ink_points(ink: np.ndarray, limit: int = ALIGN_POINTS) -> np.ndarray:
    """Up to `limit` ink pixel coordinates (x, y), evenly subsampled (deterministic)."""
    ys, xs = np.nonzero(ink)
    step = max(1, len(xs) // limit)
    return np.stack([xs[::step], ys[::step]], axis=1).astype(np.float32)


def _map_points(points: np.ndarray, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (N x 2) in frames src mapped into frames dst, for F frame pairs at once
    (src, dst: F x 4 arrays: center, size, angle). Returns integer x, y of shape F x N."""
    s = (dst[:, 2] / src[:, 2])[:, None]
    a = (dst[:, 3] - src[:, 3])[:, None]
    dx, dy = points[None, :, 0] - src[:, 0:1], points[None, :, 1] - src[:, 1:2]
    x = (np.cos(a) * dx - np.sin(a) * dy) * s + dst[:, 0:1]
    y = (np.sin(a) * dx + np.cos(a) * dy) * s + dst[:, 1:2]
    return np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)


def _lookup(dt: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance-transform values at (x, y) and whether each point is inside the image."""
    h, w = dt.shape
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return dt[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)], inside


class _Chamfer:
    """Partial symmetric chamfer cost of mapping reference frames onto the page frame."""

    def __init__(self, page: PageInk, ref_ink: np.ndarray):
        self.page_frame = np.array(tuple(page.frame[:3]) + (0.0,), np.float64)
        self.clip = ALIGN_CLIP * page.frame[2]
        self.page_dt = np.minimum(page.distance, self.clip)
        self.ref_dt = cv2.distanceTransform((~ref_ink).astype(np.uint8), cv2.DIST_L2, 3)
        self.page_pts = page.points
        self.ref_pts = ink_points(ref_ink)

    def costs(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cost, fit over the overlap) of every reference frame (F x 3)."""
        page = np.repeat(self.page_frame[None], len(frames), axis=0)
        # Reference strokes on the page (those that land inside it).
        x, y = _map_points(self.ref_pts, frames, page)
        values, inside = _lookup(self.page_dt, x, y)
        ref_to_page = _masked_mean(values, inside, self.clip)
        # Page strokes in the reference (those it covers); uncovered ones cost a share of the clip.
        x, y = _map_points(self.page_pts, page, frames)
        values, covered = _lookup(self.ref_dt, x, y)
        scale = (self.page_frame[2] / frames[:, 2])[:, None]
        page_to_ref = _masked_mean(np.minimum(values * scale, self.clip), covered, self.clip)
        overlap = 0.5 * (ref_to_page + page_to_ref)
        uncovered = 1.0 - covered.mean(axis=1)
        return overlap + UNCOVERED_COST * self.clip * uncovered, np.maximum(0.0, 1.0 - overlap / self.clip)


class PageInk:
    """A page's strokes with what every registration onto them needs from the page alone
    (its frame, ink points, distance to ink, blurred stroke image), computed once for all
    the references registered onto it."""

    def __init__(self, ink: np.ndarray):
        self.ink = ink
        self.frame = box_frame(mask_box(ink))
        self.points = ink_points(ink)
        self.distance = cv2.distanceTransform((~ink).astype(np.uint8), cv2.DIST_L2, 3)
        self._strokes: dict[tuple, np.ndarray] = {}

    def strokes(self, sigma: float, size: tuple[int, int]) -> np.ndarray:
        if (sigma, size) not in self._strokes:
            self._strokes[sigma, size] = _stroke_image(self.ink, sigma, size)
        return self._strokes[sigma, size]


def _masked_mean(values: np.ndarray, mask: np.ndarray, empty: float) -> np.ndarray:
    count = mask.sum(axis=1)
    return np.where(count > 0, (values * mask).sum(axis=1) / np.maximum(count, 1), empty)


def align_frames(page: PageInk, ref_ink: np.ndarray) -> tuple[Frame, Frame, float]:
    """(page frame, reference frame, fit in [0, 1]) of the best global alignment: the
    reference frame maps onto the page frame (see the module docstring)."""
    page_frame = page.frame
    ref_frame = box_frame(mask_box(ref_ink))
    if not len(page.points) or not ref_ink.any():
        return page_frame, ref_frame, 0.0
    chamfer = _Chamfer(page, ref_ink)
    pcx, pcy, ps = page_frame
    frames = [ref_frame + (0.0,)]
    for scale in COARSE_SCALES:
        # The reference's drawing spans `scale` x the page's; its center moves over the
        # part of the page where one of the two drawings still contains the other.
        span = scale * ps
        offsets = np.linspace(-1.0, 1.0, COARSE_POSITIONS) * abs(span - ps) / 2.0 if scale != 1.0 else (0.0,)
        frames += [_page_to_ref_frame(page_frame, (pcx + ox, pcy + oy), ref_frame, span) + (0.0,)
                   for oy in offsets for ox in offsets]
    frames = np.array(frames, np.float64)
    cost, _ = chamfer.costs(frames)
    rcx, rcy, rs, _ = frames[int(np.argmin(cost))]
    fine = np.array([(rcx + dx * rs * scale, rcy + dy * rs * scale, rs * scale, 0.0)
                     for scale in ALIGN_SCALES for dy in ALIGN_SHIFTS for dx in ALIGN_SHIFTS], np.float64)
    cost, fit = chamfer.costs(fine)
    best = fine[int(np.argmin(cost))]
    # Then the turn (a scanned page is rarely straight, a head tilts).
    turned = np.array([tuple(best[:3]) + (np.deg2rad(a),) for a in ALIGN_ANGLES], np.float64)
    cost, fit = chamfer.costs(turned)
    i = int(np.argmin(cost))
    return page_frame, tuple(float(v) for v in turned[i]), float(fit[i])


def _page_to_ref_frame(page_frame: Frame, center: tuple[float, float], ref_frame: Frame, ref_size_on_page: float
                       ) -> Frame:
    """The reference frame that puts the reference's drawing center at `center` of the page,
    its drawing spanning `ref_size_on_page` page pixels."""
    pcx, pcy, ps = page_frame
    size = ref_frame[2] * ps / ref_size_on_page  # reference pixels per page-frame size
    s = size / ps
    return ref_frame[0] - (center[0] - pcx) * s, ref_frame[1] - (center[1] - pcy) * s, size


def frame_maps(page_frame: Frame, ref_frame: Frame, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Reference coordinates of every page pixel under the global alignment."""
    h, w = shape
    s = ref_frame[2] / page_frame[2]
    a = ref_frame[3] if len(ref_frame) > 3 else 0.0
    dx, dy = np.meshgrid(np.arange(w, dtype=np.float32) - page_frame[0], np.arange(h, dtype=np.float32) - page_frame[1])
    map_x = (np.cos(a) * dx - np.sin(a) * dy) * s + ref_frame[0]
    map_y = (np.sin(a) * dx + np.cos(a) * dy) * s + ref_frame[1]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def _stroke_image(ink: np.ndarray, sigma: float, size: tuple[int, int]) -> np.ndarray:
    blurred = cv2.GaussianBlur(ink.astype(np.float32), (0, 0), sigma)
    return np.clip(cv2.resize(blurred, size, interpolation=cv2.INTER_AREA) * 255.0 * 2.0, 0, 255).astype(np.uint8)


def dense_refine(page: PageInk, warped_ref_ink: np.ndarray) -> np.ndarray:
    """Flow (H x W x 2, page pixels) taking every page pixel to its counterpart in the
    globally mapped reference."""
    h, w = page.ink.shape
    scale = min(1.0, FLOW_SIZE / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    sigma = max(1.0, FLOW_BLUR * max(h, w))
    flow_engine = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    flow = flow_engine.calc(page.strokes(sigma, size), _stroke_image(warped_ref_ink, sigma, size), None)
    return cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(w / size[0])


def local_fit(page: PageInk, warped_ref_ink: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Share of strokes (page's and mapped reference's) within FIT_TOLERANCE of a stroke of
    the other, in a Gaussian window; 0 where the reference does not reach. The window is
    wide, so it is averaged at a quarter of the resolution."""
    page_ink = page.ink
    h, w = page_ink.shape
    longest = max(h, w)
    tol = max(1.5, FIT_TOLERANCE * longest)
    near_ref = cv2.distanceTransform((~warped_ref_ink).astype(np.uint8), cv2.DIST_L2, 3) <= tol
    near_page = page.distance <= tol
    good = (page_ink & near_ref).astype(np.float32) + (warped_ref_ink & near_page).astype(np.float32)
    total = page_ink.astype(np.float32) + warped_ref_ink.astype(np.float32)
    small = (max(1, w // 4), max(1, h // 4))
    sigma = FIT_WINDOW * longest / 4.0
    blur = lambda img: cv2.GaussianBlur(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (0, 0), sigma)  # noqa: E731
    fit = cv2.resize(blur(good) / np.maximum(blur(total), 1e-4), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(covered, np.clip(fit, 0.0, 1.0), 0.0).astype(np.float32)


def register(page: PageInk | np.ndarray, ref_ink: np.ndarray, dense: bool = True) -> Registration:
    """Registration of a reference (its ink) to the page (its ink, or PageInk of it when
    several references are registered onto one page); both at analysis size."""
    page = page if isinstance(page, PageInk) else PageInk(page)
    page_ink = page.ink
    page_frame, ref_frame, global_fit = align_frames(page, ref_ink)
    map_x, map_y = frame_maps(page_frame, ref_frame, page_ink.shape)
    remap = lambda img, mx, my: cv2.remap(img, mx, my, cv2.INTER_NEAREST,  # noqa: E731
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    warped = remap(ref_ink.astype(np.uint8), map_x, map_y) > 0
    trust = 1.0
    if dense and page_ink.any() and warped.any():
        flow = dense_refine(page, warped)
        # The flow aligns any strokes with any strokes: the farther it had to move a pixel,
        # the less its fit says (a shirt outline pulled onto a face outline fits, wrongly).
        reach = FLOW_TRUST * max(page_ink.shape)
        trust = np.exp(-(flow[..., 0] ** 2 + flow[..., 1] ** 2) / (reach * reach)).astype(np.float32)
        h, w = page_ink.shape
        px = (np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]).astype(np.float32)
        py = (np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]).astype(np.float32)
        map_x = cv2.remap(map_x, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        map_y = cv2.remap(map_y, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        warped = remap(ref_ink.astype(np.uint8), map_x, map_y) > 0
    rh, rw = ref_ink.shape
    covered = (map_x >= 0) & (map_x <= rw - 1) & (map_y >= 0) & (map_y <= rh - 1)
    return Registration(map_x, map_y, local_fit(page, warped, covered) * trust, global_fit, page_frame, ref_frame)
