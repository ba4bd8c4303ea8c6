"""dermo.data.imageio: decoding every accepted kind to uint8 RGB, masks to {0, 255}, and one-line errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from dermo.data import imageio
from dermo.data.imageio import BadInputError, atomic_write_bytes, read_image, read_mask
from dermo.errors import DermoError


def _rgb(h=24, w=32, seed=0):
    """Smooth random uint8 RGB (h, w, 3): compresses like a photo, so JPEG stays close."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (7, 7), 2)


def _write(path, arr, params=()):
    """Write with cv2 (arrays given in cv2 order: BGR / BGRA / grey)."""
    assert cv2.imwrite(str(path), arr, list(params)), path
    return path


def _bad(path, fn=read_image, **kw) -> BadInputError:
    with pytest.raises(BadInputError) as info:
        fn(path, **kw)
    err = info.value
    msg = str(err)
    assert "\n" not in msg, msg
    assert msg.startswith(str(path) + ": "), msg
    assert err.path == str(path)
    assert isinstance(err, DermoError) and isinstance(err, ValueError)
    return err


# --- good images -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_lossless_rgb_round_trip(tmp_path, ext):
    rgb = _rgb()
    path = _write(tmp_path / f"a{ext}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, rgb)   # channel order is RGB, values exact


def test_jpeg_is_rgb_and_close(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (230, 20, 20)     # red | green | blue stripes: a BGR/RGB swap would be obvious
    rgb[:, 16:32] = (20, 230, 20)
    rgb[:, 32:] = (20, 20, 230)
    path = _write(tmp_path / "a.jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    out = read_image(path)
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    inner = (slice(4, 28), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 20, 24, 28, 36, 40, 44])
    assert np.abs(out[inner].astype(int) - rgb[inner]).max() <= 12


def test_grayscale_becomes_three_equal_channels(tmp_path):
    grey = _rgb()[..., 0]
    out = read_image(_write(tmp_path / "g.png", grey))
    assert out.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_rgba_drops_alpha_keeps_colour(tmp_path):
    rgb = _rgb()
    alpha = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    bgra = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha])
    out = read_image(_write(tmp_path / "a.png", bgra))
    np.testing.assert_array_equal(out, rgb)


def test_16bit_png_scaled_to_8bit(tmp_path):
    rgb8 = _rgb()
    rgb16 = rgb8.astype(np.uint16) * 257          # 255 -> 65535, k -> 257 k
    rgb16[0, 0] = (65535, 0, 32896)                # 32896 / 257 = 128.0
    path = _write(tmp_path / "deep.png", cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = read_image(path)
    assert out.dtype == np.uint8
    expected = rgb8.copy()
    expected[0, 0] = (255, 0, 128)
    np.testing.assert_array_equal(out, expected)


def test_16bit_grey_png(tmp_path):
    grey = np.full((10, 12), 65535, np.uint16)
    grey[:, :6] = 0
    out = read_image(_write(tmp_path / "g16.png", grey))
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 255}
    assert (out[:, 6:] == 255).all() and (out[:, :6] == 0).all()


def test_float_tiff_lossless(tmp_path):
    f = np.random.default_rng(1).random((20, 30, 3)).astype(np.float32)   # BGR in [0, 1)
    path = _write(tmp_path / "f.tiff", f, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    if cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype != np.float32:
        pytest.skip("this cv2 does not write float TIFF")
    out = read_image(path)
    np.testing.assert_array_equal(out, (f[..., ::-1] * 255).round().astype(np.uint8))


def test_float_tiff_default_compression_not_black(tmp_path):
    """cv2's default float TIFF (SGILOG) overshoots 1.0 a little; it must still read as [0, 1] data."""
    f = np.random.default_rng(2).random((20, 30, 3)).astype(np.float32)
    path = _write(tmp_path / "f.tif", f)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw.dtype != np.float32:
        pytest.skip("this cv2 does not write float TIFF")
    out = read_image(path)
    expected = np.clip(raw[..., ::-1] * 255, 0, 255).round()
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert out.mean() > 100          # the bug this guards read it as near-black (mean ~0.5)


def test_smallest_accepted_size(tmp_path):
    assert read_image(_write(tmp_path / "s.png", _rgb(8, 8))).shape == (8, 8, 3)


# --- bad images: one line naming the file and the problem -------------------------------------------------

def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert "empty" in _bad(p).problem


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("keep", ["half", "no_end"])
def test_truncated_file(tmp_path, ext, keep):
    good = _write(tmp_path / f"good{ext}", cv2.cvtColor(_rgb(120, 160), cv2.COLOR_RGB2BGR))
    data = good.read_bytes()
    cut = data[: len(data) // 2] if keep == "half" else data[:-12]   # -12: drops JPEG EOI / PNG IEND chunk
    p = tmp_path / f"cut{ext}"
    p.write_bytes(cut)
    problem = _bad(p).problem
    assert "truncated" in problem or "corrupt" in problem, problem


def test_truncation_detector_directly():
    """cv2 4.12 refuses these itself; the end-marker check must also catch them if a decoder grey-fills."""
    ok, buf = cv2.imencode(".jpg", _rgb(64, 64))
    data = buf.ravel()
    assert not imageio._looks_truncated("a.jpg", data)
    assert imageio._looks_truncated("a.jpg", data[: len(data) // 2])
    ok, buf = cv2.imencode(".png", _rgb(64, 64))
    data = buf.ravel()
    assert not imageio._looks_truncated("a.png", data)
    assert imageio._looks_truncated("a.png", data[:-12])


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\nsecond line\n")
    assert "not a readable image" in _bad(p).problem


def test_folder_named_jpg(tmp_path):
    p = tmp_path / "x.jpg"
    p.mkdir()
    assert "folder" in _bad(p).problem


def test_missing_path(tmp_path):
    assert "not found" in _bad(tmp_path / "nope.png").problem
    assert "not found" in _bad(tmp_path / "nope_mask.png", read_mask).problem


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_too_large_refused_from_header(tmp_path, monkeypatch, ext):
    p = _write(tmp_path / f"big{ext}", cv2.cvtColor(_rgb(40, 50), cv2.COLOR_RGB2BGR))
    monkeypatch.setattr(imageio, "MAX_PIXELS", 40 * 50 - 1)
    problem = _bad(p).problem
    assert "too large" in problem and "50x40" in problem
    monkeypatch.setattr(imageio, "MAX_PIXELS", 40 * 50)   # exactly at the limit is fine
    assert read_image(p).shape == (40, 50, 3)


def test_tiny_image(tmp_path):
    p = _write(tmp_path / "tiny.png", _rgb(4, 4))
    problem = _bad(p).problem
    assert "too small" in problem and "4x4" in problem


def test_unsupported_array_type():
    with pytest.raises(BadInputError) as info:
        imageio.to_uint8_rgb(np.zeros((8, 8, 3), np.int32), "x.tif")
    assert str(info.value) == "x.tif: unsupported pixel type int32"


# --- masks ------------------------------------------------------------------------------------------------

def _blob(h=30, w=40):
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (w // 2, h // 2), (w // 4, h // 3), 20, 0, 360, 1, -1)
    return m


def test_mask_zero_one_becomes_0_255(tmp_path):
    m01 = _blob()
    out = read_mask(_write(tmp_path / "a_mask.png", m01))
    assert out.dtype == np.uint8 and out.shape == m01.shape
    np.testing.assert_array_equal(out, m01 * 255)


def test_mask_any_positive_is_lesion(tmp_path):
    m = _blob() * 7
    m[0, 0] = 200
    out = read_mask(_write(tmp_path / "a_mask.png", m))
    np.testing.assert_array_equal(out, np.where(m > 0, 255, 0))


def test_rgb_mask(tmp_path):
    m01 = _blob()
    rgb = np.zeros(m01.shape + (3,), np.uint8)
    rgb[m01 > 0] = (0, 0, 255)         # lesion drawn in a single colour channel
    out = read_mask(_write(tmp_path / "a_mask.png", rgb))
    assert out.shape == m01.shape
    np.testing.assert_array_equal(out, m01 * 255)


def test_mask_same_aspect_resized(tmp_path):
    m01 = _blob(30, 40)
    path = _write(tmp_path / "a_mask.png", m01)
    out = read_mask(path, shape=(60, 80))
    assert out.shape == (60, 80) and set(np.unique(out)) == {0, 255}
    ref = cv2.resize(m01 * 255, (80, 60), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(read_mask(path, shape=(30, 40, 3)), m01 * 255)   # image shape accepted


def test_mask_other_aspect_refused(tmp_path):
    path = _write(tmp_path / "a_mask.png", _blob(30, 40))
    err = _bad(path, read_mask, shape=(40, 40))
    assert "40x30" in err.problem and "40x40" in err.problem


def test_mask_bad_file(tmp_path):
    p = tmp_path / "a_mask.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _bad(p, read_mask)


# --- writing ------------------------------------------------------------------------------------------------

def test_atomic_write_bytes_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_atomic_write_bytes_cleans_up_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(imageio.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_write_png_and_jpeg_round_trip(tmp_path):
    rgb = _rgb(20, 28)
    imageio.write_png(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    grey = rgb[..., 1]
    imageio.write_png(tmp_path / "m_mask.png", grey)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "m_mask.png"), cv2.IMREAD_UNCHANGED), grey)
    imageio.write_jpeg(tmp_path / "a.jpg", rgb, quality=100)
    assert np.abs(read_image(tmp_path / "a.jpg").astype(int) - rgb).mean() < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "a.png", "m_mask.png"]


def test_is_image_file_and_mask_path():
    assert imageio.is_image_file("d/a.JPG") and imageio.is_image_file("a.tiff")
    assert not imageio.is_image_file("a_mask.png")
    assert not imageio.is_image_file(".hidden.jpg")
    assert not imageio.is_image_file("a.txt")
    assert str(imageio.mask_path_for("d/img.01.jpg")).replace("\\", "/") == "d/img.01_mask.png"
