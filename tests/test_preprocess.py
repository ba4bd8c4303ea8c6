"""dermo.preprocess: cache keys and reuse, parallel runs, bad files, and the command line."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from dermo.data import imageio
from dermo.data.imageio import BadInputError
from dermo.preprocessing import cache as preprocess
from dermo.preprocessing.cache import PreprocessSettings, cached_preprocess, preprocess_many
from dermo.preprocessing.cli import main
from dermo.preprocessing.image import preprocess_image

SMALL = PreprocessSettings(size=64)


def lesion_image(seed=0, h=96, w=128):
    """uint8 RGB (h, w, 3): skin with a dark ellipse."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (220, 175, 155)
    cv2.ellipse(img, (w // 2, h // 2), (w // 5, h // 5), float(rng.uniform(0, 180)), 0, 360,
                (110, 70, 50), -1)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(folder: Path, names, seed=0):
    paths = []
    for i, name in enumerate(names):
        p = folder / name
        imageio.write_jpeg(p, lesion_image(seed + i))
        paths.append(p)
    return paths


def write_bad_files(folder: Path):
    """A zero-byte jpg, a truncated jpg and a text file named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    good = cv2.imencode(".jpg", lesion_image(9))[1].tobytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "text.jpg").write_text("this is not an image\n")
    return ["empty.jpg", "truncated.jpg", "text.jpg"]


# ----------------------------------------------------------------------------- settings and cache

def test_settings_key_depends_on_settings_and_version(monkeypatch):
    a = PreprocessSettings()
    assert a.key() == PreprocessSettings().key() and len(a.key()) >= 8
    keys = {a.key(), PreprocessSettings(size=300).key(), PreprocessSettings(hair=False).key(),
            PreprocessSettings(color=False).key(), PreprocessSettings(p=4).key()}
    assert len(keys) == 5
    old = a.key()
    monkeypatch.setattr(preprocess, "VERSION", preprocess.VERSION + "-next")
    assert PreprocessSettings().key() != old


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMO_CACHE", str(tmp_path / "c"))
    assert preprocess.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DERMO_CACHE")
    assert preprocess.default_cache_dir() == Path.home() / ".cache" / "dermo"


def test_cached_preprocess_computes_once_and_matches_preprocess_image(tmp_path):
    (src,) = write_images(tmp_path, ["a.jpg"])
    img_png, mask_png = cached_preprocess(src, SMALL, tmp_path / "cache")
    ref_img, ref_mask = preprocess_image(imageio.read_image(src), 64)
    np.testing.assert_array_equal(imageio.read_image(img_png), ref_img)
    np.testing.assert_array_equal(imageio.read_mask(mask_png), ref_mask)
    before = (img_png.stat().st_mtime_ns, mask_png.stat().st_mtime_ns)
    assert cached_preprocess(src, SMALL, tmp_path / "cache") == (img_png, mask_png)
    assert (img_png.stat().st_mtime_ns, mask_png.stat().st_mtime_ns) == before   # not rewritten


def test_cache_key_follows_mtime_settings_and_mask(tmp_path):
    (src,) = write_images(tmp_path, ["a.jpg"])
    cache = tmp_path / "cache"
    first = cached_preprocess(src, SMALL, cache)
    assert cached_preprocess(src, PreprocessSettings(size=48), cache) != first
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not preprocess.is_cached(src, SMALL, cache)
    second = cached_preprocess(src, SMALL, cache)
    assert second != first and all(p.is_file() for p in second)
    mask = np.zeros((96, 128), np.uint8)
    mask[10:40, 20:60] = 255
    imageio.write_png(tmp_path / "a_mask.png", mask)
    img_png, mask_png = cached_preprocess(src, SMALL, cache, mask_src=tmp_path / "a_mask.png")
    assert (img_png, mask_png) != second
    expected = cv2.resize(mask, (85, 64), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(imageio.read_mask(mask_png), expected)


def test_cached_preprocess_bad_files_raise_one_line_errors(tmp_path):
    for name in write_bad_files(tmp_path):
        with pytest.raises(BadInputError) as info:
            cached_preprocess(tmp_path / name, SMALL, tmp_path / "cache")
        assert name in str(info.value) and "\n" not in str(info.value)
    (src,) = write_images(tmp_path, ["b.jpg"])
    imageio.write_png(tmp_path / "wrong_mask.png", np.zeros((50, 50), np.uint8))
    with pytest.raises(BadInputError, match="does not match"):
        cached_preprocess(src, SMALL, tmp_path / "cache", mask_src=tmp_path / "wrong_mask.png")


# ----------------------------------------------------------------------------- many

def test_preprocess_many_second_run_does_no_work(tmp_path):
    srcs = write_images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    items = [(s, None) for s in srcs]
    stats = {}
    results, skipped = preprocess_many(items, SMALL, tmp_path / "cache", workers=1, stats=stats)
    assert skipped == [] and stats == {"computed": 3, "cached": 0, "skipped": 0}
    assert [r == cached_preprocess(s, SMALL, tmp_path / "cache") for r, s in zip(results, srcs)] == [True] * 3
    again = {}
    assert preprocess_many(items, SMALL, tmp_path / "cache", stats=again)[0] == results
    assert again == {"computed": 0, "cached": 3, "skipped": 0}


def test_preprocess_many_parallel_and_bad_items(tmp_path):
    srcs = write_images(tmp_path, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    bad = [tmp_path / n for n in write_bad_files(tmp_path / "bad")]
    items = [(srcs[0], None), (bad[0], None), (srcs[1], None), (bad[1], None),
             (srcs[2], None), (bad[2], None), (srcs[3], None)]
    stats = {}
    results, skipped = preprocess_many(items, SMALL, tmp_path / "cache", workers=2, on_bad="skip",
                                       stats=stats)
    assert [r is None for r in results] == [False, True, False, True, False, True, False]
    assert [s.split(":")[0] for s in skipped] == [str(b) for b in bad]
    assert stats == {"computed": 4, "cached": 0, "skipped": 3}
    serial = [cached_preprocess(s, SMALL, tmp_path / "cache") for s in srcs]
    assert [r for r in results if r is not None] == serial
    with pytest.raises(BadInputError, match="empty"):
        preprocess_many(items, SMALL, tmp_path / "cache", workers=1, on_bad="error")


# ----------------------------------------------------------------------------- command line

def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_cli_folder_recursive_with_given_mask(tmp_path, capsys):
    inp = tmp_path / "in"
    write_images(inp, ["a.jpg", "sub/b.png", "sub/deeper/c.jpg"])
    mask = np.zeros((96, 128), np.uint8)
    mask[:20, :30] = 255
    imageio.write_png(inp / "sub" / "b_mask.png", mask)
    out = inp / "out"                                             # OUTPUT inside INPUT
    code, text, _ = run_cli(capsys, inp, out, "--size", 64, "--workers", 1, "--cache-dir", tmp_path / "c")
    assert code == 0 and "wrote 3 " in text and "skipped 0" in text
    for rel in ["a", "sub/b", "sub/deeper/c"]:
        img = imageio.read_image(out / f"{rel}.png")
        m = cv2.imread(str(out / f"{rel}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert min(img.shape[:2]) == 64 and m.shape == img.shape[:2] and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 255}
    given = cv2.imread(str(out / "sub" / "b_mask.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(given, cv2.resize(mask, (85, 64), interpolation=cv2.INTER_NEAREST))
    code, text, _ = run_cli(capsys, inp, out, "--size", 64, "--workers", 1, "--cache-dir", tmp_path / "c")
    assert code == 0 and "wrote 3 " in text                      # previous outputs not taken as input


def test_cli_csv_manifest(tmp_path, capsys):
    write_images(tmp_path / "images", ["x.jpg", "y.jpg"])
    write_images(tmp_path, ["z.png"])
    imageio.write_png(tmp_path / "images" / "x_seg.png", np.full((96, 128), 255, np.uint8))
    (tmp_path / "meta.csv").write_text("image,label,mask\nx.jpg,nevus,x_seg.png\ny,melanoma,\nz.png,nevus,\n")
    out = tmp_path / "out"
    code, text, _ = run_cli(capsys, tmp_path / "meta.csv", out, "--size", 64, "--no-hair", "--no-color",
                            "--workers", 1, "--cache-dir", tmp_path / "c")
    assert code == 0 and "wrote 3 " in text
    assert sorted(p.name for p in out.iterdir()) == ["x.png", "x_mask.png", "y.png", "y_mask.png",
                                                     "z.png", "z_mask.png"]
    assert (cv2.imread(str(out / "x_mask.png"), cv2.IMREAD_UNCHANGED) == 255).all()


@pytest.mark.parametrize("name", ["empty.jpg", "truncated.jpg", "text.jpg"])
def test_cli_bad_image_is_one_error_line(tmp_path, capsys, name):
    inp = tmp_path / "in"
    write_images(inp, ["good.jpg"])
    write_bad_files(tmp_path / "all")
    (tmp_path / "all" / name).rename(inp / name)
    code, _, err = run_cli(capsys, inp, tmp_path / "out", "--size", 64, "--workers", 1,
                           "--cache-dir", tmp_path / "c")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("dermo preprocess: error: ") and name in err


def test_cli_skip_bad_images(tmp_path, capsys):
    inp = tmp_path / "in"
    write_images(inp, ["good.jpg", "good2.jpg"])
    names = write_bad_files(inp)
    code, text, _ = run_cli(capsys, inp, tmp_path / "out", "--size", 64, "--workers", 1,
                            "--on-bad-image", "skip", "--cache-dir", tmp_path / "c")
    assert code == 0 and "wrote 2 " in text and "skipped 3" in text
    assert all(n in text for n in names)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good.png", "good2.png", "good2_mask.png", "good_mask.png"]


def test_cli_input_problems(tmp_path, capsys):
    code, _, err = run_cli(capsys, tmp_path / "missing", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "not found" in err
    (tmp_path / "nolabel.csv").write_text("path,label\na.jpg,nevus\n")
    code, _, err = run_cli(capsys, tmp_path / "nolabel.csv", tmp_path / "out")
    assert code == 2 and "'image' column" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, tmp_path / "empty", tmp_path / "out")
    assert code == 2 and "no images" in err
    (tmp_path / "missing_image.csv").write_text("image\nnot_there.jpg\n")
    code, _, err = run_cli(capsys, tmp_path / "missing_image.csv", tmp_path / "out",
                           "--cache-dir", tmp_path / "c", "--workers", 1)
    assert code == 2 and "not_there.jpg: file not found" in err
