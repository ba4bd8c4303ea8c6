"""Reading and writing images and lesion masks, with one-line errors for bad files.

Every reader returns plain numpy arrays:
    read_image(path)  -> uint8 (H, W, 3) RGB
    read_mask(path)   -> uint8 (H, W) with values {0, 255}
and raises `BadInputError("<path>: <what is wrong>")` for anything it cannot use, so callers can
either stop with that one line or count and skip the file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from dermo.errors import DermoError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_SUFFIX = "_mask"
# Larger images are refused before decoding (a 100-megapixel JPEG needs ~300 MB per copy).
MAX_PIXELS = 80_000_000
# (dermo.preprocess reads through the same limit, so the fix is an outside tool)
DOWNSCALE_HINT = "downscale it first with an image tool (e.g. ImageMagick: magick IN -resize 50% OUT)"


class BadInputError(DermoError, ValueError):
    """A file that cannot be used; str() is one line naming the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def is_image_file(path) -> bool:
    name = Path(path).name
    return (Path(path).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith(".")
            and not Path(path).stem.endswith(MASK_SUFFIX))


def mask_path_for(image_path) -> Path:
    """The conventional mask location beside an image: <stem>_mask.png."""
    p = Path(image_path)
    return p.with_name(p.stem + MASK_SUFFIX + ".png")


def _read_bytes(path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise BadInputError(path, "file not found")
    if path.is_dir():
        raise BadInputError(path, "is a folder, not an image")
    size = path.stat().st_size
    if size == 0:
        raise BadInputError(path, "empty file (0 bytes)")
    return np.fromfile(str(path), dtype=np.uint8)


def _decode(path, flags: int, data: bytes | None = None) -> np.ndarray:
    if data is None:
        data = _read_bytes(path)
    elif not data:
        raise BadInputError(path, "empty file (0 bytes)")
    else:
        data = np.frombuffer(data, dtype=np.uint8)
    _check_header_size(path, data)
    # before decoding: libpng/libjpeg would print their own warnings about the missing data to stderr
    if _looks_truncated(path, data):
        raise BadInputError(path, "truncated image file (data ends early)")
    img = cv2.imdecode(data, flags)
    if img is None:
        raise BadInputError(path, "not a readable image (unknown format or corrupt data)")
    return img


def _check_header_size(path, data: np.ndarray) -> None:
    """Refuse enormous images from their header, before decoding allocates them."""
    import io
    import warnings

    from PIL import Image  # pillow comes with matplotlib / scikit-image

    try:
        with warnings.catch_warnings():   # Pillow warns above ~89 Mpx: our own limit speaks instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as im:
                w, h = im.size
    except Image.DecompressionBombError:  # Pillow refuses to open above ~179 Mpx: far above ours too
        raise BadInputError(path, f"image too large (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels; limit "
                                  f"{MAX_PIXELS:,}); {DOWNSCALE_HINT}") from None
    except Exception:  # noqa: BLE001 - unknown header: let cv2 decide
        return
    if w * h > MAX_PIXELS:
        raise BadInputError(path, f"image too large ({w}x{h} pixels; limit {MAX_PIXELS:,}); {DOWNSCALE_HINT}")


def _looks_truncated(path, data: np.ndarray) -> bool:
    """cv2 silently grey-fills truncated JPEGs and PNGs; check their end markers."""
    suffix = Path(path).suffix.lower()
    tail = data[-64:].tobytes()
    if data[:2].tobytes() == b"\xff\xd8":  # JPEG: must contain the EOI marker near the end
        return b"\xff\xd9" not in tail
    if data[:8].tobytes() == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in tail
    del suffix
    return False


def to_uint8_rgb(img: np.ndarray, path="<array>", order: str = "BGR") -> np.ndarray:
    """Any image (grey, colour with or without alpha, 8/16-bit or float) -> uint8 RGB (H, W, 3).
    `order`: the channel order of a colour image, "BGR" as OpenCV decodes files, "RGB" for arrays from
    other libraries (PIL, matplotlib, skimage)."""
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        # [0, 1] data, allowing the small overshoot of lossy float TIFFs (cv2's default SGILOG reaches ~1.005)
        hi = 255.0 if img.max() > 2.0 else 1.0
        img = np.clip(img / hi * 255.0, 0, 255).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise BadInputError(path, f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if order == "BGR" else cv2.COLOR_RGBA2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if order == "BGR" else np.ascontiguousarray(img)
    raise BadInputError(path, f"unsupported image shape {img.shape}")


def read_image(path, data: bytes | None = None) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3); grey, RGBA and 16-bit inputs are converted.
    `data`: the file's bytes already in memory (an upload), checked and decoded the same way; errors then
    name `path` as given (e.g. the uploaded file's name)."""
    img = _decode(path, cv2.IMREAD_UNCHANGED, data)
    img = to_uint8_rgb(img, path)
    if min(img.shape[:2]) < 8:
        raise BadInputError(path, f"image too small ({img.shape[1]}x{img.shape[0]} pixels)")
    return img


def read_mask(path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a lesion mask (0 background, >0 lesion) as uint8 {0, 255} (H, W).

    `shape` (H, W) of the image it belongs to: a mask of another aspect ratio is an error; one of the
    same aspect ratio but another resolution is resized (nearest neighbour).
    """
    m = _decode(path, cv2.IMREAD_UNCHANGED)
    if m.ndim == 3:
        m = m[..., :3].max(axis=2)
    m = (m > 0).astype(np.uint8) * 255
    if shape is not None and m.shape[:2] != tuple(shape[:2]):
        h, w = shape[:2]
        mh, mw = m.shape
        if abs(mh / mw - h / w) > 0.02:
            raise BadInputError(path, f"mask size {mw}x{mh} does not match its image ({w}x{h})")
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
    return m


def atomic_write_bytes(path, data: bytes) -> None:
    """Write via a temporary file in the same folder + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def encode_image(img: np.ndarray, fmt: str = "png", quality: int = 95, name="<image>") -> bytes:
    """uint8 RGB (H, W, 3), RGBA (H, W, 4) or grey (H, W) -> the bytes of a PNG ("png") or JPEG ("jpeg")."""
    codes = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}
    arr = cv2.cvtColor(img, codes[img.shape[2]]) if img.ndim == 3 else img
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", arr, params)
    if not ok:
        raise OSError(f"{name}: could not encode {fmt.upper()}")
    return buf.tobytes()


def write_png(path, img: np.ndarray) -> None:
    """Write uint8 RGB (H, W, 3) or grey (H, W) as PNG, atomically."""
    atomic_write_bytes(path, encode_image(img, "png", name=path))


def write_jpeg(path, img: np.ndarray, quality: int = 95) -> None:
    atomic_write_bytes(path, encode_image(img, "jpeg", quality, name=path))
