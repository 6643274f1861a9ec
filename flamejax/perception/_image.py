"""Reading photographs into RGB8 arrays: files, encoded bytes or arrays, EXIF orientation applied."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from jaxtyping import UInt8
from PIL import Image, ImageOps, UnidentifiedImageError

from flamejax.perception._errors import ImageReadError, ImageTooSmallError

MIN_IMAGE_SIDE = 32
"""Smallest width or height accepted: below it no face can be detected."""

ARRAY_NAME = "<array>"
_EXIF_ORIENTATION = 0x0112
_SIGNATURES = ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"))
"""File signatures of formats Pillow reads: such a file that Pillow cannot identify is damaged."""
ImageSource = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray


def source_name(source: ImageSource) -> str:
    """How error messages and results name an image source."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return ARRAY_NAME if isinstance(source, np.ndarray) else "<bytes>"


def load_image(source: ImageSource, *, min_side: int = MIN_IMAGE_SIDE) -> UInt8[np.ndarray, "H W 3"]:
    """Read a photograph as an RGB8 array.

    Accepts a path, encoded file bytes (JPEG, PNG, WebP, BMP, TIFF and whatever else Pillow or OpenCV decode)
    or an array (see :func:`to_rgb8`). EXIF orientation is applied; grayscale, palette, 16-bit and float images
    are converted to 8-bit RGB; an alpha channel is composited over white.

    Raises:
      ImageReadError: missing, empty, truncated, corrupt or unsupported source (the message names it).
      ImageTooSmallError: width or height below ``min_side`` pixels.
    """
    name = source_name(source)
    if isinstance(source, np.ndarray):
        image = to_rgb8(source, name=name)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        image = decode_image(bytes(source), name)
    elif isinstance(source, (str, os.PathLike)):
        image = decode_image(_read_bytes(Path(source)), name)
    else:
        raise TypeError(f"cannot read an image from a {type(source).__name__}; give a path, bytes or an array")
    check_image_size(image, name, min_side)
    return image


def check_image_size(image: np.ndarray, name: str, min_side: int = MIN_IMAGE_SIDE) -> None:
    """Raise :class:`ImageTooSmallError` when ``image`` is narrower or shorter than ``min_side``."""
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        raise ImageTooSmallError(
            f"{name}: image is {width}x{height} pixels; at least {min_side}x{min_side} is needed to find a face"
        )


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be read ({err.strerror or err})") from err


def decode_image(data: bytes, name: str) -> UInt8[np.ndarray, "H W 3"]:
    """Decode encoded image bytes with Pillow (EXIF orientation applied), else OpenCV for formats Pillow lacks."""
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    kind = "image"
    try:
        with Image.open(io.BytesIO(data)) as opened:
            kind = opened.format or "image"
            opened.load()
            rotated = opened.getexif().get(_EXIF_ORIENTATION, 1) not in (None, 1)
            return pil_to_rgb8(ImageOps.exif_transpose(opened) if rotated else opened, name)
    except UnidentifiedImageError:
        signed = next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)
        if signed is not None:
            raise ImageReadError(f"{name}: truncated or corrupt {signed} file ({len(data)} bytes)") from None
        return _decode_with_opencv(data, name)
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{name}: image too large to decode safely ({err})") from err
    except (OSError, SyntaxError, EOFError, ValueError, IndexError) as err:
        if isinstance(err, ImageReadError):
            raise
        raise ImageReadError(f"{name}: truncated or corrupt {kind} file ({err})") from err


def _decode_with_opencv(data: bytes, name: str) -> UInt8[np.ndarray, "H W 3"]:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageReadError(
            f"{name}: not an image in a readable format (JPEG, PNG, WebP, BMP, TIFF, ...); {len(data)} bytes"
        )
    if decoded.ndim == 3:
        order = cv2.COLOR_BGRA2RGBA if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB
        decoded = cv2.cvtColor(decoded, order)
    return to_rgb8(decoded, name=name)


def pil_to_rgb8(image: Image.Image, name: str) -> UInt8[np.ndarray, "H W 3"]:
    """Convert any Pillow image mode to RGB8; 16-bit and float modes keep their full range."""
    if image.mode.startswith("I") or image.mode in ("F", "RGB"):
        return to_rgb8(np.asarray(image), name=name)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    return to_rgb8(np.asarray(image.convert("RGBA" if has_alpha else "RGB")), name=name)


def to_rgb8(array: np.ndarray, *, name: str = ARRAY_NAME) -> UInt8[np.ndarray, "H W 3"]:
    """Convert an image array (assumed RGB or RGBA, not BGR) to contiguous uint8 (H, W, 3).

    Layouts (H, W), (H, W, 1), (H, W, 3), (H, W, 4). dtypes: uint8; uint16 (full 0..65535 range); bool;
    other integers within 0..255 (or 0..65535, taken as 16-bit); floats in [0, 1] (or in [0, 255] when the
    maximum exceeds 1). Alpha is composited over white.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or array.size == 0:
        raise ImageReadError(
            f"{name}: array of shape {array.shape} is not an image; expected (H, W), (H, W, 1), (H, W, 3) "
            "or (H, W, 4) with H, W > 0"
        )
    if array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] == 3):
        rgb = array if array.ndim == 3 else np.repeat(array[:, :, None], 3, axis=2)
        return np.ascontiguousarray(rgb)
    values = _to_unit_range(array, name)
    if values.ndim == 2:
        values = values[:, :, None]
    elif values.shape[2] == 4:
        alpha = values[:, :, 3:]
        values = values[:, :, :3] * alpha + (1.0 - alpha)
    rgb8 = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(rgb8, (*rgb8.shape[:2], 3)))


def _to_unit_range(array: np.ndarray, name: str) -> np.ndarray:
    """Array values as float32 in [0, 1] according to the dtype rules of :func:`to_rgb8`."""
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:  # any byte order
        return array.astype(np.float32) / (255.0 if array.dtype.itemsize == 1 else 65535.0)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ImageReadError(f"{name}: {array.dtype} values span {low}..{high}; expected 0..255 or 0..65535")
        return array.astype(np.float32) / (255.0 if high <= 255 else 65535.0)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageReadError(f"{name}: float image contains NaN or infinite values")
        scale = 255.0 if float(array.max()) > 1.0 else 1.0
        return np.clip(array.astype(np.float32) / scale, 0.0, 1.0)
    raise ImageReadError(f"{name}: unsupported array dtype {array.dtype}")
