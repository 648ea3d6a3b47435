"""Safe image decoding and encoding.

Every image that enters the pipeline goes through `decode_image`: the header is checked
against the size limits before any pixel is decoded, and whatever the file holds (CMYK,
16-bit, palette, alpha, grayscale) comes out as 8-bit RGB. Problems raise `ImageError`
with a one-line message that names the file.
"""

from __future__ import annotations

import io
import re
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


def decode_image(data: bytes, name: str, max_pixels: int = 178_956_970, max_side: int = 20000) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (H, W, 3). Alpha is composited on white."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Below Pillow's hard limit its warning adds nothing to the job's own check.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow's hard limit, from the header like ours: same message, Pillow's numbers.
        raise ImageError(f"{name}: image is over the limit (job.max_image_pixels={max_pixels}; Pillow: {exc}); "
                         f"refused before decoding") from None
    except Exception as exc:  # Pillow raises several types for unknown/corrupt headers
        # Pillow's text names the in-memory buffer (<_io.BytesIO object at 0x...>): drop it.
        detail = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
        raise ImageError(f"{name}: not a readable image ({type(exc).__name__}: {detail})") from None
    w, h = img.size
    if w > max_side or h > max_side or w * h > max_pixels:
        raise ImageError(
            f"{name}: image is {w}x{h}, over the limit (job.max_image_side={max_side}, "
            f"job.max_image_pixels={max_pixels}); refused before decoding")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except Exception as exc:
        raise ImageError(f"{name}: corrupt or truncated image data ({exc})") from None
    return to_rgb8(img, name)


def to_rgb8(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        gray = ((arr - lo) / (hi - lo or 1.0) * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    if mode == "RGB":
        arr = np.asarray(img)
    else:
        try:
            arr = np.asarray(img.convert("RGB"))  # CMYK, YCbCr, L, P, 1, ...
        except Exception as exc:
            raise ImageError(f"{name}: unsupported image mode {mode} ({exc})") from None
    if arr.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {arr.dtype}")
    return np.ascontiguousarray(arr)


def encode_png(rgb: np.ndarray, compression: int = 1) -> bytes:
    """PNG bytes of an RGB (H, W, 3) or gray (H, W) uint8 array. Low compression: shards
    are intermediate data and encode time dominates on 2 cores."""
    if rgb.ndim == 3:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
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
    return arr if gray else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


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
