"""The shortcut check generator (dermo.data.shortcut, dermo.data.artefacts): splits, artefact correlation,
artefacts inside the field of view and outside the lesion, clean = flipped without artefacts, the CLI."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dermo.data import synthetic
from dermo.data.artefacts import KINDS, draw_artefact
from dermo.data.datasets import load_dataset
from dermo.data.imageio import read_image
from dermo.data.shortcut import BLEND, plan, write_shortcut_dataset
from dermo.data.synthetic_draw import draw_lesion_image


def test_plan_splits_and_exact_artefact_shares():
    rows = pd.DataFrame(plan(200, 100, 0.95, seed=0), columns=["split", "subset", "index", "cls", "kind"])
    has = rows.assign(art=rows["kind"] != "")
    share = has.groupby(["split", "cls"])["art"].mean()
    assert share[("biased", "others")] == pytest.approx(0.95, abs=0.011)      # round(0.95·n) per subset
    assert share[("biased", "nevus")] == pytest.approx(0.05, abs=0.011)
    assert share[("flipped", "nevus")] == pytest.approx(0.95, abs=0.011)      # reversed
    assert share[("flipped", "others")] == pytest.approx(0.05, abs=0.011)
    assert not has[has["split"] == "clean"]["art"].any()
    biased = rows[rows["split"] == "biased"]
    assert (biased.groupby("cls").size() == 100).all() and (biased["subset"] == "val").sum() == 40
    for subset in ("train", "val"):                    # the correlation holds in train and in val alike
        part = has[(has["split"] == "biased") & (has["subset"] == subset)]
        assert part[part["cls"] == "others"]["art"].mean() > 0.9 > 0.1 > part[part["cls"] == "nevus"]["art"].mean()
    kinds = rows[rows["kind"] != ""]["kind"].value_counts()
    assert set(kinds.index) == set(KINDS) and kinds.max() - kinds.min() <= 4   # kinds in turn
    clean = rows[rows["split"] == "clean"][["index", "cls"]].to_numpy().tolist()
    assert clean == rows[rows["split"] == "flipped"][["index", "cls"]].to_numpy().tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_artefact_inside_field_of_view_outside_lesion_and_nothing_else_changes(kind):
    for i in range(12):
        seen = {}

        def hook(scene, lesion, fov):
            seen.update(footprint=draw_artefact(scene, lesion, fov, kind, np.random.default_rng([i, 1])),
                        fov=fov.copy())
        clean, mask = draw_lesion_image("others", np.random.default_rng([3, i]), 96, blend_range=BLEND)
        dirty, mask2 = draw_lesion_image("others", np.random.default_rng([3, i]), 96, blend_range=BLEND,
                                         artefact=hook)
        footprint = seen["footprint"] > 0
        np.testing.assert_array_equal(mask, mask2)
        assert footprint.sum() > 20                                   # a visible artefact …
        assert not (footprint & (mask > 0)).any()                     # … never on the lesion
        assert (seen["fov"][footprint] > 0).all()                     # … always inside the field of view
        changed = np.abs(clean.astype(int) - dirty).max(axis=2) > 0
        grown = cv2.dilate(footprint.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0   # anti-aliased rim
        assert changed.any() and not (changed & ~grown).any()        # the artefact is the only difference


def _lesion_colour(img, mask):
    px = img[mask > 0].astype(np.float64)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[mask > 0].astype(np.float64)
    return [*px.mean(0), *px.std(0), *hsv.mean(0), *hsv.std(0)]


def _cv(x, y):
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return cross_val_score(clf, np.asarray(x), y, cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()


def test_lesion_cues_are_weaker_than_the_demos_but_still_there():
    """The shortcut set's lesions carry less class signal than the demo's and than the artefact's 95 % (so CE
    prefers the artefact), yet more than chance (so a model that ignores the artefact can still classify)."""
    y = np.arange(160) % 2
    names = ["nevus", "others"]
    weak = [_lesion_colour(*draw_lesion_image(names[c], np.random.default_rng([0, 1, i]), 64, blend_range=BLEND))
            for i, c in enumerate(y)]
    demo = [_lesion_colour(*draw_lesion_image(names[c], np.random.default_rng([0, i]), 64))
            for i, c in enumerate(y)]
    weak_score, demo_score = _cv(weak, y), _cv(demo, y)
    assert 0.6 < weak_score < min(demo_score, 0.9)


def test_written_set_layout_manifests_and_worker_independence(tmp_path):
    a = write_shortcut_dataset(tmp_path / "a", n=20, n_test=8, size=48, workers=1)
    b = write_shortcut_dataset(tmp_path / "b", n=20, n_test=8, size=48, workers=2)
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    biased = load_dataset(a / "biased", "binary")
    assert (len(biased.train), len(biased.val)) == (16, 4)
    for split in ("flipped", "clean"):
        ds = load_dataset(a / split / "labels.csv", "binary")            # every row in the val split
        assert len(ds.val) == 8 and not ds.train and all(s.mask for s in ds.val)
    table = pd.read_csv(a / "shortcut.csv", keep_default_na=False)
    assert len(table) == 36 and (table[table["split"] == "clean"]["artefact"] == "").all()
    flipped = pd.read_csv(a / "flipped" / "labels.csv", keep_default_na=False)
    assert (flipped["split"] == "val").all() and set(flipped["artefact"][flipped["label"] == "nevus"]) <= set(KINDS)
    img = read_image(a / "clean" / flipped["image"][0])
    assert img.shape == (48, 48, 3)
    assert "not real patient data" in (a / "README.txt").read_text()


def test_cli_shortcut_and_one_line_errors(tmp_path, capsys):
    assert synthetic.main([str(tmp_path / "s"), "--shortcut", "--n", "10", "--n-test", "4", "--size", "40",
                           "--workers", "1"]) == 0
    assert "biased/ (10 images" in capsys.readouterr().out
    for argv, words in ((["--bias", "0.3"], "--bias 0.3"), (["--task", "multiclass"], "binary"),
                        (["--blend", "0.9", "0.6"], "--blend 0.9 0.6")):
        assert synthetic.main([str(tmp_path / "t"), "--shortcut", "--n", "10", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("dermo synthetic: error:") and words in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert synthetic.main([str(tmp_path / "mine"), "--shortcut", "--n", "10"]) == 2
    assert "not a dermo shortcut dataset" in capsys.readouterr().err


def _footprints(style, kind, n=10, size=96):
    """(footprint, lesion mask) of `kind` drawn with `style` on n lesion scenes, and the pixels it painted."""
    out = []
    for i in range(n):
        seen = {}

        def hook(scene, lesion, fov):
            seen["footprint"] = draw_artefact(scene, lesion, fov, kind, np.random.default_rng([i, 1]), style) > 0
            seen["paint"] = scene[seen["footprint"]]
            seen["fov"] = fov.copy()
        _, mask = draw_lesion_image("others", np.random.default_rng([5, i]), size, blend_range=BLEND, artefact=hook)
        out.append({**seen, "mask": mask > 0})
    return out


def _lesion_distance(fp, mask):
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    return float(dist[fp].mean())


@pytest.mark.parametrize("kind", KINDS)
def test_artefact_variants_place_size_and_colour(kind):
    """Every variant still clears the lesion and stays in the field of view; `beside` lies nearer the lesion than
    `rim`, scale 1.6 covers more than scale 0.7, and a painted colour is the colour painted."""
    from dermo.data.artefacts import COLOURS, Style

    drawn = {name: _footprints(style, kind) for name, style in {
        "beside": Style(place="beside"), "rim": Style(place="rim"), "small": Style(scale=0.7),
        "large": Style(scale=1.6), "grey": Style(colour="grey"), "brown": Style(colour="brown")}.items()}
    for name, items in drawn.items():
        for d in items:
            assert d["footprint"].sum() > 5 and not (d["footprint"] & d["mask"]).any(), name
            assert (d["fov"][d["footprint"]] > 0).all(), name
    near = np.mean([_lesion_distance(d["footprint"], d["mask"]) for d in drawn["beside"]])
    far = np.mean([_lesion_distance(d["footprint"], d["mask"]) for d in drawn["rim"]])
    # measured (20 scenes, 96 px): sticker 12.8 vs 28.8 px, ink 12.8 vs 28.9, ruler 20.8 vs 24.6 (a long strip
    # whose disc barely fits: few centres to choose from)
    assert near < far / (1.1 if kind == "ruler" else 1.5), (near, far)
    small = np.mean([d["footprint"].sum() for d in drawn["small"]])
    large = np.mean([d["footprint"].sum() for d in drawn["large"]])
    # area ∝ scale² = 5.2× where there is room; a long ruler shrinks to fit: measured 1.75× (238 vs 417 px)
    assert large > 1.4 * small, (small, large)
    for colour in ("grey", "brown"):
        paint = np.concatenate([d["paint"] for d in drawn[colour]])
        # the painted colour covers the footprint but the sticker's white rim, the ruler's ticks
        share = (np.abs(paint - np.array(COLOURS[colour], np.float32)).max(axis=1) < 0.1).mean()
        assert share > 0.4, (colour, share)             # grey, measured: sticker 0.52, ruler 0.84, ink 1.0


def test_artefact_variant_sets_are_written_and_recorded(tmp_path):
    from dermo.data.artefacts import Style

    out = write_shortcut_dataset(tmp_path / "v", n=12, n_test=4, size=48, workers=1,
                                 style=Style(kinds=("ink",), place="rim", scale=1.5, colour="grey"))
    table = pd.read_csv(out / "shortcut.csv", keep_default_na=False)
    assert set(table["artefact"]) == {"", "ink"}
    assert "ink; place rim, size x1.5, colour grey" in (out / "README.txt").read_text()
    with pytest.raises(ValueError, match="--artefact-place corner"):
        write_shortcut_dataset(tmp_path / "w", n=12, n_test=4, size=48, style=Style(place="corner"))
