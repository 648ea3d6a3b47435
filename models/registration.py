"""Where each pixel of the page lies in a reference: a global similarity refined by a dense,
non-rigid flow, and how well the two drawings agree around every pixel.

1. **Global, partial, multi-scale.** Frames (center, size) map the reference onto the
   page. The search starts from the ink boxes and tries references scaled from
   COARSE_SCALES of the box fit at positions over the page's drawing, so a head close-up
   finds the head of a full-body page and a full-body reference its close-up. A frame's
   cost is its evidence (`evidence`): how much closer than chance the strokes of the two
   drawings lie where they overlap (a symmetric clipped chamfer distance), times how much
   of both drawings the overlap holds; strokes that land off the other drawing count for
   nothing, except page strokes a whole (uncut) reference leaves uncovered. The coarse
   grid is scored on stroke centerlines with a wide clip (a zoomed drawing's thick
   strokes would take anything laid on them); its best COARSE_KEPT frames are refined on
   a small grid (ALIGN_SCALES, ALIGN_SHIFTS), the best of those once more, then the angle
   (ALIGN_ANGLES).
2. **Dense.** OpenCV's DIS optical flow between blurred stroke images of the page and of
   the globally mapped reference follows what one similarity cannot: bent limbs, a turned
   head, a warped scan (Kroeger et al. 2016; BasicPBC warps references the same way
   before matching, with a learned flow).
3. **Local fit.** After the flow, the share of strokes within FIT_TOLERANCE of a stroke of
   the other drawing, averaged over a window: near 1 where the reference is drawn like the
   page around that pixel, near 0 where it is not (another pose of that arm) or where the
   reference does not reach, and lower where the flow had to move far (FLOW_TRUST); beyond
   the window's reach from any stroke (inside a big region of a close-up) it is the fit of
   the nearest strokes. Votes are weighted by it, so a reference only speaks where it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.morphology import skeletonize

from .segmentation import nearest_fill

# Center x, center y, size, and (reference frames) the angle in radians by which page
# coordinates turn on their way into the reference.
Frame = tuple[float, ...]

ALIGN_SCALES = (0.85, 0.92, 1.0, 1.08, 1.17)
ALIGN_SHIFTS = (-0.12, -0.06, 0.0, 0.06, 0.12)
ALIGN_ANGLES = (-15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0)  # degrees
COARSE_SCALES = (0.4, 0.55, 0.75, 1.0, 1.35, 1.8, 2.5)  # reference size / page drawing size
COARSE_POSITIONS = 5  # per axis, over the page's ink box
COARSE_MIN_SHIFT = 0.2  # the positions span at least this share of the page's drawing size either way
ALIGN_POINTS = 600  # stroke points per drawing the chamfer distance is measured at
ALIGN_CLIP = 0.05  # chamfer distances are clipped at this share of the page's drawing size
CUT_SHARE = 0.005  # a drawing with more of its image's border on ink is cut by it
COARSE_KEPT = 4  # best coarse frames refined
COARSE_CLIP = 0.15  # the same for the coarse search: a basin as wide as its grid's steps
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
    s = dst[:, 2] / src[:, 2]
    a = dst[:, 3] - src[:, 3]
    cos, sin = (np.cos(a) * s).astype(np.float32)[:, None], (np.sin(a) * s).astype(np.float32)[:, None]
    dx = points[None, :, 0] - src[:, 0:1].astype(np.float32)
    dy = points[None, :, 1] - src[:, 1:2].astype(np.float32)
    x = cos * dx - sin * dy + dst[:, 0:1].astype(np.float32)
    y = sin * dx + cos * dy + dst[:, 1:2].astype(np.float32)
    return np.rint(x).astype(np.int32), np.rint(y).astype(np.int32)


def _lookup(dt: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance-transform values at (x, y) and whether each point is inside the image."""
    h, w = dt.shape
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    flat = np.clip(y, 0, h - 1) * w + np.clip(x, 0, w - 1)
    return dt.ravel().take(flat), inside


class _Chamfer:
    """Partial symmetric chamfer distance of reference frames mapped onto the page frame,
    on the drawings' ink or their centerlines."""

    def __init__(self, page: Strokes, ref: Strokes, clip: float = ALIGN_CLIP, centerlines: bool = False):
        self.page_frame = np.array(tuple(page.frame[:3]) + (0.0,), np.float64)
        self.clip = clip * page.frame[2]
        self.page_pts, page_dt = page.centerline() if centerlines else page.ink_points()
        self.page_dt = np.minimum(page_dt, self.clip)
        self.ref_pts, self.ref_dt = ref.centerline() if centerlines else ref.ink_points()

    def measure(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean clipped stroke distance where the two drawings overlap, share of the
        reference's strokes landing on the page, share of the page's strokes the reference
        covers) of every reference frame (F x 4)."""
        page = np.repeat(self.page_frame[None], len(frames), axis=0)
        # Reference strokes on the page (those that land inside it).
        x, y = _map_points(self.ref_pts, frames, page)
        values, inside = _lookup(self.page_dt, x, y)
        ref_to_page = _masked_mean(values, inside, self.clip)
        # Page strokes in the reference (those it covers).
        x, y = _map_points(self.page_pts, page, frames)
        values, covered = _lookup(self.ref_dt, x, y)
        scale = (self.page_frame[2] / frames[:, 2])[:, None]
        page_to_ref = _masked_mean(np.minimum(values * scale, self.clip), covered, self.clip)
        return 0.5 * (ref_to_page + page_to_ref), inside.mean(axis=1), covered.mean(axis=1)

    def fit(self, distance: np.ndarray) -> np.ndarray:
        return np.maximum(0.0, 1.0 - distance / self.clip)


def evidence(measured: tuple[np.ndarray, np.ndarray, np.ndarray], chance: float, ref_whole: bool) -> np.ndarray:
    """Cost of frames (lower is better) from _Chamfer.measure: how much closer than at
    `chance` (the distance of the search's typical, wrong, frame) the strokes lie where
    the drawings overlap, times how much of both the overlap holds (the geometric mean of
    the two shares). So a close-up reference fitting a fifth of the page well beats the
    whole reference blown up over the page at chance, and a full-body reference on a
    close-up page is judged by the part of it on the page. A reference drawn whole (not
    cut by its image's border) has no excuse for page strokes it leaves uncovered: each
    costs `chance` (it is not a close-up shrunk into a corner of the page)."""
    distance, inside, covered = measured
    cost = (distance - chance) * np.sqrt(inside * covered)
    return cost + chance * (1.0 - covered) if ref_whole else cost


class Strokes:
    """A drawing's strokes with what registration needs of them, computed once (a page is
    registered onto by every reference, a reference onto every page of a chapter): the ink
    box frame, the distance to ink, blurred stroke images for the flow, and the strokes'
    centerlines for the coarse alignment (a zoomed drawing's strokes are thick: the
    distance to thick ink is 0 anywhere on them, so another drawing shrunk onto a few thick
    strokes would fit them perfectly)."""

    def __init__(self, ink: np.ndarray):
        self.ink = ink
        self.frame = box_frame(mask_box(ink))
        self.distance = cv2.distanceTransform((~ink).astype(np.uint8), cv2.DIST_L2, 3)
        self._strokes: dict[tuple, np.ndarray] = {}
        self._center: tuple[np.ndarray, np.ndarray] | None = None
        self._points: np.ndarray | None = None
        # Cut by the image's border (a close-up, a crop): strokes run off its edge.
        edge = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]) if ink.size else ink.ravel()
        self.cut = bool(edge.size) and float(edge.mean()) > CUT_SHARE

    def strokes(self, sigma: float, size: tuple[int, int]) -> np.ndarray:
        if (sigma, size) not in self._strokes:
            self._strokes[sigma, size] = _stroke_image(self.ink, sigma, size)
        return self._strokes[sigma, size]

    def ink_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(up to ALIGN_POINTS ink points x, y; distance to ink)."""
        if self._points is None:
            self._points = ink_points(self.ink)
        return self._points, self.distance

    def centerline(self) -> tuple[np.ndarray, np.ndarray]:
        """(up to ALIGN_POINTS centerline points x, y; distance to the centerlines)."""
        if self._center is None:
            center = skeletonize(self.ink) if self.ink.any() else self.ink
            self._center = (ink_points(center),
                            cv2.distanceTransform((~center).astype(np.uint8), cv2.DIST_L2, 3))
        return self._center


def _masked_mean(values: np.ndarray, mask: np.ndarray, empty: float) -> np.ndarray:
    count = mask.sum(axis=1)
    return np.where(count > 0, (values * mask).sum(axis=1) / np.maximum(count, 1), empty)


def align_frames(page: Strokes, ref: Strokes) -> tuple[Frame, Frame, float]:
    """(page frame, reference frame, fit in [0, 1]) of the best global alignment: the
    reference frame maps onto the page frame (see the module docstring)."""
    page_frame = page.frame
    ref_frame = ref.frame
    if not page.ink.any() or not ref.ink.any():
        return page_frame, ref_frame, 0.0
    pcx, pcy, ps = page_frame
    frames = [ref_frame + (0.0,)]
    for scale in COARSE_SCALES:
        # The reference's drawing spans `scale` x the page's; its center moves over the
        # part of the page where one of the two drawings still contains the other, and at
        # about the same size still by COARSE_MIN_SHIFT (a character drawn elsewhere on
        # the reference, whose ink box a prop or a second figure widens).
        span = scale * ps
        offsets = np.linspace(-1.0, 1.0, COARSE_POSITIONS) * max(abs(span - ps) / 2.0, COARSE_MIN_SHIFT * ps)
        frames += [_page_to_ref_frame(page_frame, (pcx + ox, pcy + oy), ref_frame, span) + (0.0,)
                   for oy in offsets for ox in offsets]
    frames = np.array(frames, np.float64)
    coarse, chamfer = _Chamfer(page, ref, COARSE_CLIP, centerlines=True), _Chamfer(page, ref)
    # Chance: the median coarse frame is a wrong one; its distance is what strokes that do
    # not correspond lie apart (it depends on how dense both drawings are).
    measured = coarse.measure(frames)
    whole = not ref.cut
    coarse_cost = evidence(measured, float(np.median(measured[0])), whole)
    chance = float(np.median(chamfer.measure(frames)[0]))
    # The best few coarse frames are refined (the coarse grid is wide: the best of it
    # need not lie in the true frame's basin), then the best refined one once more.
    starts = frames[np.argsort(coarse_cost, kind="stable")[:COARSE_KEPT]]
    for _ in range(2):
        fine = np.concatenate([_fine_grid(frame) for frame in starts])
        best = fine[int(np.argmin(evidence(chamfer.measure(fine), chance, whole)))]
        starts = best[None]
    # Then the turn (a scanned page is rarely straight, a head tilts).
    turned = np.array([tuple(best[:3]) + (np.deg2rad(a),) for a in ALIGN_ANGLES], np.float64)
    measured = chamfer.measure(turned)
    i = int(np.argmin(evidence(measured, chance, whole)))
    return page_frame, tuple(float(v) for v in turned[i]), float(chamfer.fit(measured[0][i:i + 1])[0])


def _fine_grid(frame: np.ndarray) -> np.ndarray:
    rcx, rcy, rs = frame[:3]
    return np.array([(rcx + dx * rs * scale, rcy + dy * rs * scale, rs * scale, 0.0)
                     for scale in ALIGN_SCALES for dy in ALIGN_SHIFTS for dx in ALIGN_SHIFTS], np.float64)


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


def dense_refine(page: Strokes, warped_ref_ink: np.ndarray) -> np.ndarray:
    """Flow (H x W x 2, page pixels) taking every page pixel to its counterpart in the
    globally mapped reference."""
    h, w = page.ink.shape
    scale = min(1.0, FLOW_SIZE / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    sigma = max(1.0, FLOW_BLUR * max(h, w))
    flow_engine = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    flow = flow_engine.calc(page.strokes(sigma, size), _stroke_image(warped_ref_ink, sigma, size), None)
    return cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(w / size[0])


def local_fit(page: Strokes, warped_ref_ink: np.ndarray, covered: np.ndarray) -> np.ndarray:
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
    weight = blur(total)
    fit = blur(good) / np.maximum(weight, 1e-4)
    # Farther than the window reaches from any stroke (the inside of a big region on a
    # close-up page) the fit is that of the nearest strokes, not 0: a reference that fits
    # a face's outline also says what lies in the middle of the face.
    stroked = weight > 1e-4
    if stroked.any() and not stroked.all():
        fit = nearest_fill(fit, stroked)
    fit = cv2.resize(fit, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(covered, np.clip(fit, 0.0, 1.0), 0.0).astype(np.float32)


def register(page: Strokes | np.ndarray, ref: Strokes | np.ndarray, dense: bool = True) -> Registration:
    """Registration of a reference's strokes to the page's (ink masks, or their Strokes
    when one drawing is registered several times); both at analysis size."""
    page = page if isinstance(page, Strokes) else Strokes(page)
    ref = ref if isinstance(ref, Strokes) else Strokes(ref)
    page_ink, ref_ink = page.ink, ref.ink
    page_frame, ref_frame, global_fit = align_frames(page, ref)
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
