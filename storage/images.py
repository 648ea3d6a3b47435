"""Safe image decoding and encoding.

Every image that enters the pipeline goes through `decode_image`: the header is checked
against the size limits and the page memory budget before any pixel is decoded, and
whatever the file holds (CMYK, 16-bit, palette, alpha, grayscale) comes out as 8-bit RGB,
converted in strips. Problems raise `ImageError` with a one-line message that names the file.
"""

from __future__ import annotations

import io
import re
import struct
import warnings

import cv2
import numpy as np
from PIL import Image, ImageFile

ImageFile.LOAD_TRUNCATED_IMAGES = False
# Only these decoders ever see input bytes (the JPEG decoder also reads cameras' MPO
# files). Pillow's own decompression-bomb guard stays in force behind the job's limits.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
Image.init()  # register every plugin now, so all of IMAGE_FORMATS are known to Image.open


class ImageError(ValueError):
    """An input image that cannot be used; str() is a one-line message naming the file."""


# Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS, 178,956,970 px). It stays in force for
# every Image.open in the process; only a job that sets job.max_image_pixels above it opens
# its pages without it, and then the job's own header check below is the guard.
PILLOW_HARD_LIMIT = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)

# The per-page memory budget (docs/storage.md, "Memory"): what one stage holds at most for a
# page of W x H pixels, estimated from the header before anything is decoded:
#     W * H * PAGE_BYTES_PER_PIXEL + the file's size + PAGE_FIXED_BYTES
# 8 B/px: the decoded 8-bit RGB page (3 B/px) beside the decoder's own buffer (Pillow keeps
# RGB as 4 B/px, OpenCV's PNG decoder a second 3 B/px) or beside the output page (3 B/px);
# PAGE_FIXED_BYTES: the upscale stage's tiles (models/upscale.py TILE_PIXELS) and codec buffers.
PAGE_BYTES_PER_PIXEL = 8
PAGE_FIXED_BYTES = 256 << 20
STRIP_PIXELS = 1 << 22  # conversions to RGB run in strips of ~4 Mpx, so they cost no extra page


def page_memory_bytes(width: int, height: int, file_bytes: int = 0) -> int:
    """Peak memory one stage needs for a page (the formula above)."""
    return width * height * PAGE_BYTES_PER_PIXEL + file_bytes + PAGE_FIXED_BYTES


def decode_image(data: bytes, name: str, max_pixels: int = 178_956_970, max_side: int = 20000,
                 max_memory: int | None = None, notes: list[str] | None = None) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (H, W, 3). Alpha is composited on white.
    Sizes are checked from the header before any pixel is decoded: the pixel limits and,
    when max_memory is given, the page memory budget (page_memory_bytes). An animated
    image gives its first frame and a line in `notes`."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    img = _open(data, name, max_pixels)
    w, h = img.size
    if w > max_side or h > max_side or w * h > max_pixels:
        raise ImageError(
            f"{name}: image is {w}x{h}, over the limit (job.max_image_side={max_side}, "
            f"job.max_image_pixels={max_pixels}); refused before decoding")
    need = page_memory_bytes(w, h, len(data))
    if max_memory is not None and need > max_memory:
        raise ImageError(
            f"{name}: a {w}x{h} page needs about {need / 2**30:.1f} GiB to process ({PAGE_BYTES_PER_PIXEL} B/pixel + "
            f"file + {PAGE_FIXED_BYTES >> 20} MiB), over job.max_page_memory_mb={max_memory >> 20}; refused before decoding")
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and notes is not None:
        notes.append(f"{name}: animated image with {frames} frames; only the first frame is used")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if frames > 1:
                img.seek(0)
            img.load()
    except Exception as exc:
        raise ImageError(f"{name}: corrupt or truncated image data ({exc})") from None
    return to_rgb8(img, name)


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Image.open restricted to IMAGE_FORMATS (header only, nothing decoded yet)."""
    try:
        with warnings.catch_warnings():
            # Below Pillow's hard limit its warning adds nothing to the job's own check.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        if max_pixels > PILLOW_HARD_LIMIT:
            return _open_without_pillow_limit(data, name)
        # Pillow's hard limit, from the header like ours: same message, Pillow's numbers.
        raise ImageError(f"{name}: image is over the limit (job.max_image_pixels={max_pixels}; Pillow: {exc}); "
                         f"refused before decoding") from None
    except Exception as exc:  # Pillow raises several types for unknown/corrupt headers
        raise ImageError(f"{name}: not a readable image ({type(exc).__name__}: {_detail(exc)})") from None


def _open_without_pillow_limit(data: bytes, name: str) -> Image.Image:
    """What Image.open does for IMAGE_FORMATS, minus its size check: for a job that allows
    pages over Pillow's hard limit (the caller checks the size against the job's limit).
    Image.MAX_IMAGE_PIXELS is left alone, so other code keeps Pillow's guard."""
    fp = io.BytesIO(data)
    prefix = data[:16]
    for fmt in IMAGE_FORMATS:
        factory, accept = Image.OPEN[fmt]
        result = not accept or accept(prefix)
        if not result or isinstance(result, str):
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
        except Exception as exc:
            raise ImageError(f"{name}: not a readable image ({type(exc).__name__}: {_detail(exc)})") from None
    raise ImageError(f"{name}: not a readable image (no decoder in {', '.join(IMAGE_FORMATS)} accepts it)")


def _detail(exc: Exception) -> str:
    # Pillow's text names the in-memory buffer (<_io.BytesIO object at 0x...>): drop it.
    return re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))


def to_rgb8(img: Image.Image, name: str) -> np.ndarray:
    """8-bit RGB of a loaded image, converted in strips of rows (STRIP_PIXELS), so the
    conversion holds the image, the output and one strip, never a float copy of the page."""
    w, h = img.size
    convert = _strip_converter(img, name)
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, STRIP_PIXELS // max(1, w))
    for y in range(0, h, rows):
        out[y:y + rows] = convert(img.crop((0, y, w, min(h, y + rows))))
    return out


def _strip_converter(img: Image.Image, name: str):
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        peak = 65535.0 if img.getextrema()[1] > 255 else 255.0

        def gray16(strip):
            gray = np.clip(np.asarray(strip, dtype=np.float64) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return gray[..., None]
        return gray16
    if mode == "F":
        lo, hi = (float(v) for v in img.getextrema())

        def gray_float(strip):
            arr = np.asarray(strip, dtype=np.float64)
            return ((arr - lo) / (hi - lo or 1.0) * 255.0 + 0.5).astype(np.uint8)[..., None]
        return gray_float
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        def on_white(strip):
            rgba = np.asarray(strip.convert("RGBA"), dtype=np.float32)
            alpha = rgba[..., 3:4] / 255.0
            return np.clip(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
        return on_white

    def rgb(strip):
        try:
            arr = np.asarray(strip if mode == "RGB" else strip.convert("RGB"))  # CMYK, YCbCr, L, P, 1, ...
        except Exception as exc:
            raise ImageError(f"{name}: unsupported image mode {mode} ({exc})") from None
        if arr.dtype != np.uint8:
            raise ImageError(f"{name}: unsupported pixel type {arr.dtype}")
        return arr
    return rgb


def encode_png(rgb: np.ndarray, compression: int = 1, consume: bool = False) -> bytes:
    """PNG bytes of an RGB (H, W, 3) or gray (H, W) uint8 array. Low compression: shards
    are intermediate data and encode time dominates on 2 cores. consume=True: the caller
    is done with the array, so it is turned into BGR in place instead of copied (big pages)."""
    if rgb.ndim == 3:
        in_place = consume and rgb.flags.writeable and rgb.flags.c_contiguous
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR, dst=rgb) if in_place else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    else:
        bgr = rgb
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ImageError("could not encode PNG")
    return buf.tobytes()


def decode_png(data: bytes, gray: bool = False) -> np.ndarray:
    """Decode PNG bytes the pipeline wrote itself (trusted, already validated)."""
    flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if arr is None:
        raise ImageError("corrupt PNG in shard")
    return arr if gray else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)  # in place: no second page


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, without decoding."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ImageError("not a PNG")
    return struct.unpack(">II", data[16:24])


REDUCED_DECODE_MIN_PIXELS = 32 << 20  # pages this big are decoded reduced for thumbnails


def decode_png_reduced(data: bytes, longest: int) -> np.ndarray:
    """RGB of a shard PNG for a thumbnail whose longest side is `longest`: big pages are
    decoded at 1/2, 1/4 or 1/8 size (still at least twice `longest`), so a thumbnail of a
    huge page does not hold the whole page twice; small pages decode normally."""
    w, h = png_size(data)
    factor = 1
    if w * h >= REDUCED_DECODE_MIN_PIXELS:
        factor = next((f for f in (8, 4, 2) if max(w, h) // f >= 2 * longest), 1)
    if factor == 1:
        return decode_png(data)
    flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if arr is None:
        raise ImageError("corrupt PNG in shard")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("could not encode JPEG")
    return buf.tobytes()


def resize_longest(img: np.ndarray, longest: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Scale down so the longest side is at most `longest` (never up)."""
    h, w = img.shape[:2]
    scale = longest / max(h, w)
    if scale >= 1:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=interpolation)
