"""Reading a person's image: any source, any common format and mode -> float pixels in [0, 1].

Limits are checked before pixels are decoded: the byte size first, then width x height from
the header, so a small file that would decode to gigapixels (a decompression bomb) costs
nothing. Errors are :class:`ImageError` (not an image, empty, truncated, unsupported) and
:class:`ImageTooLargeError` (over a limit), which the CLI and the server turn into messages.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from pathlib import Path
from typing import IO, Any, Union

import cv2
import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from mnistkit.errors import ImageError, ImageTooLargeError

# A phone photo as JPEG is 2-8 MB; 20 MB leaves room for PNG scans without inviting abuse.
MAX_BYTES = 20_000_000
# 25 MP covers any phone camera (a 200 MP sensor bins to 12.5 MP photos by default) and is far
# below Pillow's own bomb limit of 89 MP.
MAX_PIXELS = 25_000_000
# Formats people send digits in; TIFF for scanners. Others (PSD, ICO, EPS...) are refused:
# fewer decoders, less attack surface.
FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF")

# Union, not |: a module-level alias is evaluated at runtime, and os.PathLike | ... needs 3.10+.
ImageSource = Union[  # noqa: UP007
    str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray
]


def describe(source: Any) -> str:
    """A short name for messages: the path, or what kind of object it was."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"image bytes ({len(source)} B)"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else f"the {type(source).__name__} input"


def read_bytes(source: Any, max_bytes: int = MAX_BYTES) -> bytes:
    """The raw bytes of a path, bytes-like or binary file object, refusing more than max_bytes."""
    what = describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            # Non-blocking, so that opening a FIFO returns at once (no writer needed), and the
            # type is read from what was opened: no other file can take its place meanwhile.
            with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
                info = os.fstat(f.fileno())
                if stat.S_ISDIR(info.st_mode):
                    raise IsADirectoryError
                if not stat.S_ISREG(info.st_mode):
                    raise ImageError(f"{what} is not a regular file (a FIFO, socket or device); "
                                     f"give an image file.")  # fmt: skip
                if info.st_size > max_bytes:
                    raise ImageTooLargeError(
                        f"{what} is {info.st_size:,} bytes, over the limit of {max_bytes:,}."
                    )
                data = f.read(max_bytes + 1)
        except IsADirectoryError:
            raise ImageError(f"{what} is a directory, not an image.") from None
        except FileNotFoundError:
            raise ImageError(f"{what} does not exist.") from None
        except PermissionError:
            raise ImageError(f"{what} cannot be read (permission denied).") from None
        except OSError as e:  # a socket cannot be opened, say
            raise ImageError(f"{what} cannot be read ({e.strerror or e}).") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if not isinstance(data, bytes):
            raise ImageError(f"{what} is a text stream: open the image in binary mode ('rb').")
    else:
        raise ImageError(
            f"{what} is not an image: give a path, bytes, a file, a PIL image or an array."
        )
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{what} is over the limit of {max_bytes:,} bytes.")
    if not data:
        raise ImageError(f"{what} is empty.")
    return data


def decode(
    data: bytes, what: str = "the image", max_pixels: int = MAX_PIXELS, max_side: int | None = None
) -> Image.Image | np.ndarray:
    """Decode the first frame of PNG/JPEG/BMP/WebP/GIF/TIFF bytes, upright (EXIF orientation).

    A :func:`simple_png` comes as :func:`to_array` would give its pixels, decoded by OpenCV.

    With ``max_side``, a JPEG larger than that is decoded at a reduced scale (1/2, 1/4 or 1/8,
    Pillow's ``draft``: the decoder skips the detail), never below ``max_side`` on its long
    side: a 4000x3000 photo with ``max_side=1000`` is read as 1000x750, several times faster
    than at full size.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)
            check_pixels(im, what, max_pixels)
            im.seek(0)  # GIF/WebP/TIFF: the first frame
            if max_side and im.format == "JPEG" and max(im.size) > max_side:
                k = max_side / max(im.size)
                full = max(im.size)
                im.draft(im.mode, (math.ceil(im.size[0] * k), math.ceil(im.size[1] * k)))
                im.info["mnistkit_scale"] = full / max(im.size)
            if simple_png(im):
                pixels = png_pixels(data, im)
                if pixels is not None:
                    return pixels
            im.load()
            return ImageOps.exif_transpose(im)
    except Image.DecompressionBombError:
        raise ImageTooLargeError(
            f"{what} is over the pixel limit (a decompression bomb?)."
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{what} is not an image of a supported type ({', '.join(FORMATS)})."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        raise ImageError(f"{what} is damaged or truncated ({e}).") from None


def simple_png(im: Image.Image) -> bool:
    """An 8-bit grey, RGB or RGBA PNG without a transparent colour or EXIF: what a browser's
    canvas, a screenshot or a scan saves, and what :func:`png_pixels` decodes."""
    return (im.format == "PNG" and im.mode in ("L", "RGB", "RGBA")
            and "transparency" not in im.info and "exif" not in im.info)  # fmt: skip


def png_pixels(data: bytes, im: Image.Image) -> np.ndarray | None:
    """:func:`to_array` of a :func:`simple_png`, decoded by OpenCV (libpng) straight into
    numpy; None when it has transparent pixels or libpng refuses it (a damaged file: Pillow
    then says why). The drawing page's 280x280 canvas: 0.95 ms instead of 1.07 through
    Pillow's decoder, its band split and compare (EPYC, busy)."""
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None or a.dtype != np.uint8 or a.shape[:2] != (im.size[1], im.size[0]):
        return None
    if a.ndim == 2:
        return a[..., None]
    if a.shape[2] == 4:
        # Opaque grey (the drawing page's canvas) in one pass over the pixels as 32-bit words
        # (B, G, R, A in memory): 1.94 -> 1.87 ms for the canvas, against comparing the strided
        # channels (A/B in one process, EPYC).
        word = a.view(np.dtype("<u4"))[..., 0]
        blue = word & 0xFF
        if np.array_equal(word, blue * 0x010101 | 0xFF000000):
            return blue.astype(np.uint8)[..., None]
        if int(a[..., 3].min()) < 255:
            return None
        return cv2.cvtColor(a, cv2.COLOR_BGRA2RGB)  # opaque, not grey: colour
    b, g, r = a[..., 0], a[..., 1], a[..., 2]
    if np.array_equal(b, g) and np.array_equal(g, r):
        return np.ascontiguousarray(r)[..., None]
    return cv2.cvtColor(a, cv2.COLOR_BGR2RGB)


def check_pixels(im: Image.Image | np.ndarray, what: str, max_pixels: int) -> None:
    w, h = im.size if isinstance(im, Image.Image) else (im.shape[1], im.shape[0])
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}."
        )
    if w * h == 0:
        raise ImageError(f"{what} has no pixels ({w}x{h}).")


def to_float(im: Image.Image) -> np.ndarray:
    """Pixels as (H, W, C) float32 in [0, 1], C = 1 (grey) or 3 (colour), alpha flattened.

    Transparent pixels get the paper colour that contrasts with the visible strokes: a drawing
    of black strokes on a transparent canvas goes on white, white strokes on black.
    """
    mode = im.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return scale_values(np.asarray(im.convert("F") if mode != "F" else im, np.float32))[
            ..., None
        ]
    if has_alpha(im):
        rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
        return flatten_alpha(rgba[..., :3], rgba[..., 3])
    return to_array(im).astype(np.float32) / 255.0


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def opaque(im: Image.Image) -> bool:
    """An RGBA or LA image whose alpha is 255 everywhere: a browser's canvas export is one."""
    return im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema() == (255, 255)


def to_array(im: Image.Image) -> np.ndarray:
    """Pixels as (H, W, C) uint8 for opaque 8-bit images (nearly all), C = 1 or 3; others
    (16-bit, float, with alpha) as :func:`to_float` gives them. Kept in bytes, a 12 MP photo
    is shrunk before it is ever converted to floats (4x less memory traffic)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") or (
        has_alpha(im) and not opaque(im)
    ):
        return to_float(im)
    if im.mode in ("1", "L", "LA"):
        return np.asarray(im if im.mode == "L" else im.convert("L"))[..., None]
    if im.mode == "RGBA":
        # The drawing page's canvas: opaque, white on black. Compared band by band in Pillow
        # and kept as one grey band, it comes to pixels in 0.17 ms instead of 0.75 (through
        # an RGB copy and numpy) or 2.3 (through floats with alpha, before it was found
        # opaque), and the grey pipeline after it takes half the time of the colour one.
        r, g, b, _ = im.split()
        if not (ImageChops.difference(r, g).getbbox() or ImageChops.difference(g, b).getbbox()):
            return np.asarray(r)[..., None]
    rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    if is_grey(rgb):  # a grey image saved as colour
        return rgb[..., :1].copy()
    return rgb


def is_grey(rgb: np.ndarray) -> bool:
    """R == G == B everywhere; a sparse sample first, so a colour photo is told at once."""
    for a in (rgb[::17, ::13], rgb):
        if not ((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()):
            return False
    return True


def flatten_alpha(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite over white or black, whichever the opaque pixels stand out from more."""
    opaque = alpha > 0.5
    if opaque.all() or not opaque.any():
        return rgb
    lum = rgb[opaque].mean()
    paper = 1.0 if lum < 0.5 else 0.0
    return rgb * alpha[..., None] + paper * (1.0 - alpha[..., None])


def scale_values(a: np.ndarray) -> np.ndarray:
    """Map any numeric range onto [0, 1] by its likely full scale (1, 255, 65535 or min..max)."""
    # float64 first: huge values (1e300) would overflow float32 to inf.
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if a.size == 0:
        return a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and hi <= 1:
        out = a
    elif lo >= 0 and hi <= 255:
        out = a / 255.0
    elif lo >= 0 and hi <= 65535:
        out = a / 65535.0
    else:  # min..max, scaled into [-1, 1] first: hi - lo of values near 1e308 overflows
        scale = max(abs(lo), abs(hi))
        a, lo, hi = a / scale, lo / scale, hi / scale
        out = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return out.astype(np.float32)


def array_to_float(a: np.ndarray, what: str = "the array") -> np.ndarray:
    """A numpy image (H, W), (H, W, 1|3|4) or (1|3|4, H, W) -> (H, W, C) float32 in [0, 1]."""
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.float32)
    if not (np.issubdtype(a.dtype, np.number)) or np.iscomplexobj(a):
        raise ImageError(f"{what} has dtype {a.dtype}; give numbers.")
    while a.ndim > 2 and a.shape[0] == 1 and a.shape[-1] not in (1, 3, 4):
        a = a[0]  # a batch or channel axis of one, as torch keeps them
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first, as torch keeps them
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"{what} has shape {a.shape}; give (H, W), (H, W, 3) or (H, W, 4).")
    f = scale_values(a)
    if f.shape[2] == 4:
        return flatten_alpha(f[..., :3], f[..., 3])
    return f


def load_pixels(
    source: ImageSource,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_side: int | None = None,
) -> np.ndarray:
    """Any image source -> (H, W, C) float32 in [0, 1] (C = 1 or 3); see :func:`load_array`."""
    a = load_array(source, max_bytes, max_pixels, max_side)
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a


def load_array(
    source: ImageSource,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_side: int | None = None,
) -> np.ndarray:
    """Any image source -> (H, W, C) pixels, C = 1 or 3: uint8 for an opaque 8-bit image,
    float32 in [0, 1] for any other (16-bit, float, alpha composited, a numpy array).

    Args:
        source: a path, bytes, a binary file object, a PIL image or a numpy array.
        max_bytes: refuse encoded images larger than this (ImageTooLargeError).
        max_pixels: refuse images with more pixels than this (ImageTooLargeError).
        max_side: a JPEG over this on its long side may be decoded at a reduced scale, down to
            this (see :func:`decode`); other sources come at full size.

    Returns:
        The pixels, alpha composited onto a contrasting paper.
    """
    return load_scaled(source, max_bytes, max_pixels, max_side)[0]


def load_scaled(
    source: ImageSource,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_side: int | None = None,
) -> tuple[np.ndarray, float]:
    """:func:`load_array`, and the source's px per decoded px (4.0 for a 4000 px JPEG decoded
    at 1000 px; 1.0 for any image decoded at full size): boxes go back to the source's pixels."""
    what = describe(source)
    if isinstance(source, np.ndarray):
        check_pixels(source if source.ndim >= 2 else source.reshape(1, -1), what, max_pixels)
        return array_to_float(source, what), 1.0
    if isinstance(source, Image.Image):
        check_pixels(source, what, max_pixels)
        try:
            return to_array(source), 1.0
        except (OSError, ValueError) as e:
            raise ImageError(f"{what} cannot be converted ({e}).") from None
    im = decode(read_bytes(source, max_bytes), what, max_pixels, max_side)
    if isinstance(im, np.ndarray):
        return im, 1.0
    try:
        return to_array(im), float(im.info.get("mnistkit_scale", 1.0))
    except (OSError, ValueError) as e:
        raise ImageError(f"{what} cannot be converted ({e}).") from None
