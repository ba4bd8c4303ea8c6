"""dermo.ablation: the loss grid on tiny generated data (64 px, B0 from scratch, 1 epoch, 2 trainings)."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dermo.evaluation import scoring as evaluate
from dermo.data.synthetic import write_dataset
from dermo.experiments import ablation
from dermo.experiments import grid as configs
from dermo.experiments.ablation_report import cell
from dermo.run.config import (RECOMMENDED_LAMBDA_OUTSIDE, RECOMMENDED_LAMBDA_RRR, RECOMMENDED_PASTE_SHARE,
                               TrainConfig)
from dermo.training import trainer as training

CONFIGS = ["baseline", "+mask", "full"]          # full = +mask with the default options: 2 trainings
METRIC_COLUMNS = ["accuracy", "balanced_accuracy", "kappa", "auc", "lesion_focus", "max_abs_cam"]


def args_for(data, out, *extra):
    return ["--data", str(data), "--task", "binary", "--backbone", "B0", "--image-size", "64",
            "--batch-size", "8", "--epochs", "1", "--weights", "none", "--workers", "1",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    data = write_dataset(root / "binary", "binary", n=48, size=72, workers=1)
    out = root / "grid"
    assert ablation.main(args_for(data, out, "--configs", ",".join(CONFIGS))) == 0
    return data, out


def no_training(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(training, "train", fail)


def as_number(x):
    return math.nan if x is None else float(x)


@pytest.mark.slow
def test_tables_rows_columns_and_values_equal_each_runs_metrics(grid):
    data, out = grid
    table = pd.read_csv(out / "ablation.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns) == ["config", "run", "lambda_center", "lambda_cskl", "cskl", "lambda_mask",
                                   "lambda_outside", "outside_form", "cam_stride", "lambda_rrr", "paste_share",
                                   *METRIC_COLUMNS, "train_s", "eval_s", "wall_s", "error"]
    assert table["config"].tolist() == CONFIGS
    assert table["run"].tolist() == ["baseline", "+mask", "+mask"]          # full reuses +mask's run
    assert not (out / "full").exists()
    assert table[["lambda_center", "lambda_cskl", "lambda_mask"]].to_numpy().tolist() == [
        [0.0, 0.0, 0.0], [1.0, 0.1, 0.5], [1.0, 0.1, 0.5]]
    assert table["cskl"].tolist() == ["off", "penalized", "penalized"]
    md = (out / "ablation.md").read_text()
    assert "cumulative" in md
    for _, row in table.iterrows():
        m = json.loads((out / row["run"] / "eval-val" / "metrics.json").read_text())
        cfg = json.loads((out / row["run"] / "config.json").read_text())
        assert cfg["lambda_center"] == row["lambda_center"] and cfg["cskl"] == row["cskl"]
        assert m["n"] > 0 and "lesion_focus" in m
        for k in METRIC_COLUMNS:
            np.testing.assert_allclose(row[k], as_number(m[k]), rtol=1e-12, equal_nan=True, err_msg=k)
        assert row["train_s"] == cfg["train_seconds"] and row["eval_s"] == m["predict_seconds"]
        assert row["wall_s"] >= row["train_s"] > 0
        assert pd.isna(row["error"])
        cells = [cell(as_number(m[k])) for k in METRIC_COLUMNS]
        assert f"| {row['config']} | " + " | ".join(cells) + " |" in md
    chart = cv2.imread(str(out / "ablation.png"))
    assert chart is not None and chart.shape[0] > 200 and chart.shape[1] > 400


@pytest.mark.slow
def test_rerun_reuses_finished_runs_without_training(grid, monkeypatch):
    data, out = grid
    before = (out / "ablation.csv").read_text()
    no_training(monkeypatch)
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    assert ablation.main(args_for(data, out, "--configs", ",".join(CONFIGS), "--resume")) == 0
    assert (out / "ablation.csv").read_text() == before


@pytest.mark.slow
def test_trained_but_unevaluated_run_is_only_evaluated(grid, monkeypatch):
    data, out = grid
    metrics = out / "baseline" / "eval-val" / "metrics.json"
    before = json.loads(metrics.read_text())
    shutil.rmtree(metrics.parent)
    no_training(monkeypatch)
    assert ablation.main(args_for(data, out, "--configs", "baseline")) == 0
    after = json.loads(metrics.read_text())
    for k in METRIC_COLUMNS:
        assert after[k] == before[k], k
    table = pd.read_csv(out / "ablation.csv")
    assert table["config"].tolist() == ["baseline"]
    assert table.loc[0, "accuracy"] == before["accuracy"]


@pytest.mark.slow
def test_run_trained_with_other_options_is_refused(grid, monkeypatch, capsys):
    data, out = grid
    no_training(monkeypatch)
    assert ablation.main(args_for(data, out, "--configs", "baseline", "--epochs", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(out / "baseline") in err and "epochs 1 vs 2" in err


def test_failed_configuration_is_reported_and_the_rest_goes_on(tmp_path, monkeypatch):
    calls = []

    def fail_first(cfg, log=print):
        calls.append(cfg.out)
        raise training.TrainingError(f"{cfg.out}: loss became NaN")
    monkeypatch.setattr(training, "train", fail_first)
    out = tmp_path / "grid"
    assert ablation.main(args_for(tmp_path / "data", out, "--configs", "+center,baseline")) == 1
    assert calls == [str(out / "baseline"), str(out / "+center")]           # grid order, both tried
    table = pd.read_csv(out / "ablation.csv")
    assert table["config"].tolist() == ["baseline", "+center"]
    assert table[METRIC_COLUMNS].isna().all().all()
    assert "loss became NaN" in table.loc[1, "error"]
    assert "## Failed" in (out / "ablation.md").read_text()
    assert (out / "ablation.png").stat().st_size > 0


def test_unknown_configuration_is_one_line(tmp_path, capsys):
    assert ablation.main(args_for(tmp_path, tmp_path / "o", "--configs", "baseline,+nothing")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "+nothing" in err and "+cskl-penalized" in err


def test_grid_takes_the_lambdas_of_the_options():
    base = TrainConfig(data="d", lambda_center=2.0, lambda_cskl=0.3, lambda_mask=0.7, cskl="original")
    got = {n: configs.loss_overrides(base, n) for n in configs.CONFIGS}
    deck = dict(lambda_outside=0.0, outside_form="logit", cam_stride=32, lambda_rrr=0.0, paste_share=0.0)
    assert got["baseline"] == dict(lambda_center=0.0, lambda_cskl=0.0, cskl="off", lambda_mask=0.0, **deck)
    assert got["+center"] == dict(lambda_center=2.0, lambda_cskl=0.0, cskl="off", lambda_mask=0.0, **deck)
    assert got["+cskl-original"] == dict(lambda_center=2.0, lambda_cskl=0.3, cskl="original", lambda_mask=0.0,
                                         **deck)
    assert got["+cskl-penalized"] == dict(lambda_center=2.0, lambda_cskl=0.3, cskl="penalized", lambda_mask=0.0,
                                          **deck)
    assert got["+mask"] == dict(lambda_center=2.0, lambda_cskl=0.3, cskl="penalized", lambda_mask=0.7, **deck)
    outside = dict(lambda_center=2.0, lambda_cskl=0.3, cskl="penalized", lambda_mask=0.7,
                   lambda_outside=RECOMMENDED_LAMBDA_OUTSIDE, outside_form="logit", lambda_rrr=0.0,
                   paste_share=0.0)                                                                 # recommended λ4
    assert got["+outside"] == dict(**outside, cam_stride=32)
    assert got["+stride16"] == dict(**outside, cam_stride=16)
    assert got["rrr"] == dict(lambda_center=0.0, lambda_cskl=0.0, cskl="off", lambda_mask=0.0,
                              **{**deck, "lambda_rrr": RECOMMENDED_LAMBDA_RRR})      # CE + RRR, not cumulative
    assert got["paste"] == dict(lambda_center=0.0, lambda_cskl=0.0, cskl="off", lambda_mask=0.0,
                                **{**deck, "paste_share": RECOMMENDED_PASTE_SHARE})  # CE + paste, not cumulative
    assert got["+stride16+paste"] == dict(**{**outside, "paste_share": RECOMMENDED_PASTE_SHARE}, cam_stride=16)
    assert got["full"] == dict(lambda_center=2.0, lambda_cskl=0.3, cskl="original", lambda_mask=0.7, **deck)
    given = configs.loss_overrides(dataclasses.replace(base, lambda_outside=0.25, cam_stride=16), "+outside")
    assert (given["lambda_outside"], given["cam_stride"]) == (0.25, 16)               # the options' own
    planned = configs.plan(base, list(configs.CONFIGS), Path("/nonexistent/abl"))
    assert len({cfg.out for _, cfg in planned}) == 11        # full differs from +mask here: its own run


def test_demo_uses_demo_data_and_settings(tmp_path, monkeypatch):
    import dermo.data.synthetic

    seen = {}
    monkeypatch.setattr(dermo.data.synthetic, "ensure_demo_dataset", lambda out, **k: out)
    monkeypatch.setattr(ablation, "ablation", lambda base, names, out, log=print:
                        seen.update(base=base, names=names, out=out) or pd.DataFrame({"error": [""]}))
    assert ablation.main(["--demo", "--epochs", "3", "--out", str(tmp_path / "abl")]) == 0
    base = seen["base"]
    assert base.demo and base.task == "binary" and base.data.replace("\\", "/").endswith("data/demo/binary")
    assert (base.image_size, base.weights, base.epochs) == (96, "none", 3)     # --epochs given wins
    assert seen["names"] == list(ablation.CONFIGS) and seen["out"] == tmp_path / "abl"


def test_interrupted_training_is_resumed(tmp_path, monkeypatch):
    """A run folder with a mid-training checkpoint (backup/state.json) is continued with resume=True;
    a folder started but never checkpointed is trained afresh."""
    from dermo.run import folder as runs
    from dermo.training.checkpoint import STATE

    out, seen = tmp_path / "grid", {}
    base = TrainConfig(data=str(tmp_path / "data"), task="binary", image_size=64, epochs=1, weights="none",
                      batch_size=8)                                     # = args_for's options
    for name, cfg in configs.plan(base, ["baseline", "+center"], out):
        cfg.run_dir.mkdir(parents=True)
        runs.write_json(cfg.run_dir / runs.RESUME_CONFIG, vars(cfg))
    runs.write_json(out / "baseline" / "backup" / STATE, {"epoch": 0})

    def record(cfg, log=print):
        seen[cfg.run_dir.name] = cfg.resume
        raise training.TrainingError("stop here")
    monkeypatch.setattr(training, "train", record)
    assert ablation.main(args_for(tmp_path / "data", out, "--configs", "baseline,+center")) == 1
    assert seen == {"baseline": True, "+center": False}
