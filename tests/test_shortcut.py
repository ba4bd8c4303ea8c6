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
