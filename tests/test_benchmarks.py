"""benchmarks/: throughput.py end to end with tiny settings on the CPU (the CI check of the GPU benchmark); the
HAM10000 protocol's manifests and table on a tiny layout."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_prints_its_table_with_tiny_settings():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--backend", "tensorflow",
                           "--size", "32", "--batch", "2", "--steps", "2", "--precision", "fp32", "--jit", "off",
                           "--workers", "2", "--pipeline-images", "8"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "devices: tensorflow on CPU:0" in out
    assert re.search(r"^\| plain \| fp32 \| off \| [\d.]+ \|  \|$", out, re.M), out
    assert re.search(r"^\| cam \| fp32 \| off \| [\d.]+ \| [\d.]+ \|$", out, re.M), out
    assert re.search(r"^\| input pipeline \(2 workers, 8 images\) \| \| \| [\d.]+ \| \|$", out, re.M), out
    assert re.search(r"^pipeline / training: [\d.]+ ", out, re.M), out


def test_ham10000_manifests_and_table_from_a_tiny_layout(tmp_path):
    # the protocol's own files on a 4-image layout: labels nv -> nevus, the rest -> others, dx7 = dx; the table
    # row of a finished CNN run comes from its eval-expert/metrics.json (with the outside-greyed figures)
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ham10000

    data = tmp_path / "ham"
    data.mkdir()
    (data / "metadata.csv").write_text(
        "image,dx,lesion_id,mask,age_approx,sex,localization,dx_type\n"
        "a.jpg,nv,L1,masks/a_mask.png,40.0,male,back,histo\nb.jpg,mel,L1,masks/b_mask.png,40.0,male,back,histo\n"
        "c.jpg,bcc,L2,masks/c_mask.png,,female,face,histo\nd.jpg,nv,L3,masks/d_mask.png,55.0,male,trunk,consensus\n")
    out = tmp_path / "out"
    paths = ham10000.write_manifests(data, out)
    import pandas as pd

    binary, generated, dx7 = (pd.read_csv(p) for p in paths)
    assert binary["label"].tolist() == ["nevus", "others", "others", "nevus"]
    assert binary["mask"].tolist() == [str((data / f"masks/{n}_mask.png").resolve()) for n in "abcd"]
    assert "mask" not in generated and dx7["label"].tolist() == ["nv", "mel", "bcc", "nv"]
    assert binary["lesion_id"].tolist() == ["L1", "L1", "L2", "L3"]
    row = out / "binary-deck"
    (row / "eval-expert").mkdir(parents=True)
    (row / "config.json").write_text(json.dumps({"wall_seconds": 300.0, "train_seconds": 600.0}))  # resumed
    (row / "eval-expert" / "metrics.json").write_text(json.dumps(
        {"balanced_accuracy": 0.8, "auc": 0.9, "kappa": 0.6, "accuracy": 0.85, "lesion_focus": 0.72, "n": 2003,
         "outside_greyed": {"accuracy_change": -0.05, "unchanged": 0.9}}))
    text = ham10000.table(out)
    assert "| binary-deck | 0.800 | 0.900 | 0.600 | 0.850 | 0.720 | -0.050 / 0.90 | 2003 | 10 |" in text
    assert (out / "results.csv").exists() and text.count("\n") == 3          # header, rule, the one finished row


def test_shortcut_variants_table_and_options(tmp_path):
    # the variant table from hand-made replicates.csv files: mean ± sample sd over the seeds (numpy by hand:
    # clean 0.6, 0.7 -> 0.650 ± 0.071; gaps −0.4, −0.4), a failed run left out, variants in the runner's order
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import shortcut_variants as sv

    header = "config,seed,clean_accuracy,flipped_accuracy,clean_lesion_focus,error\n"
    (tmp_path / "rim").mkdir()
    (tmp_path / "rim" / "replicates.csv").write_text(
        header + "baseline,0,0.6,0.2,0.2,\nbaseline,1,0.7,0.3,0.3,\nbaseline,2,0.9,0.9,0.9,NaN loss\n")
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "replicates.csv").write_text(header + "+stride16,0,0.75,0.5,0.8,\n")
    lines = sv.table(tmp_path).splitlines()
    assert lines[2] == "| default | sticker,ruler,ink; free; ×1; natural | +stride16 | 0 | 0.750 | 0.500 | -0.250 | 0.800 |"
    assert lines[3] == ("| rim | sticker,ruler,ink; rim; ×1; natural | baseline | 0, 1 | 0.650 ± 0.071 | "
                        "0.250 ± 0.071 | -0.400 ± 0.000 | 0.250 ± 0.071 |")
    assert len(lines) == 4 and (tmp_path / "variants.md").exists()
    # every variant is a style the generator accepts; options beyond the runner's own go to dermo ablation
    assert {v: sv.style_of(v).place for v in ("rim", "beside", "beside-brown")} == {
        "rim": "rim", "beside": "beside", "beside-brown": "beside"}
    assert sv.style_of("large").scale == 2.0 and sv.style_of("grey").colour == "grey"
    argv = sv.ablation_argv("rim", tmp_path / "d", sv.argparse.Namespace(
        image_size=128, epochs=12, configs="baseline", seeds="0,1,2", out=tmp_path,
        extra=["--monitor", "val_counterfactual_accuracy"]))
    assert argv[argv.index("--data") + 1] == str(tmp_path / "d" / "biased")
    assert argv[-4:] == ["--monitor", "val_counterfactual_accuracy", "--out", str(tmp_path / "rim")]


def _isic_layout(tmp_path):
    """A HAM10000-like folder (70 images of 7 diagnoses, 2 photos per lesion) and an official-test-like one."""
    import pandas as pd

    ham, test = tmp_path / "ham", tmp_path / "test"
    (ham / "images").mkdir(parents=True)
    (test / "images").mkdir(parents=True)
    dx = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    rows = [{"image": f"I{i:03d}.jpg", "dx": dx[i % 7], "lesion_id": f"L{i // 14 * 7 + i % 7:03d}",
             "mask": f"masks/I{i:03d}_mask.png", "age_approx": "50", "sex": "male", "localization": "back",
             "dx_type": "histo"} for i in range(70)]
    pd.DataFrame(rows).to_csv(ham / "metadata.csv", index=False)
    pd.DataFrame({"image": [f"images/T{i}.jpg" for i in range(7)], "dx": dx}).to_csv(test / "labels.csv", index=False)
    return ham, test


def test_isic2018_inner_split_is_grouped_written_once_and_the_metadata_split_three_way(tmp_path):
    import pandas as pd
    import pytest

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import isic2018

    ham, test = _isic_layout(tmp_path)
    out = tmp_path / "out"
    isic2018.manifests(ham, test, out)
    dx7 = pd.read_csv(out / "dx7.csv", dtype=str)
    assert set(dx7["split"]) == {"train", "val"} and 6 <= (dx7["split"] == "val").sum() <= 14   # one group fold of 7
    assert not set(dx7.loc[dx7["split"] == "val", "lesion_id"]) & set(dx7.loc[dx7["split"] == "train", "lesion_id"])
    binary = pd.read_csv(out / "binary.csv", dtype=str)
    assert list(binary["split"]) == list(dx7["split"])                     # every row the same split
    assert set(binary.loc[binary["dx"] == "nv", "label"]) == {"nevus"} and "mask" not in pd.read_csv(
        out / "dx7-generated.csv").columns
    meta, report = pd.read_csv(out / "meta-dx7.csv", dtype=str), pd.read_csv(out / "meta-dx7-report.csv", dtype=str)
    assert set(meta["fold"]) == {str(k) for k in range(7)} - {"1"} and set(report["fold"]) == {"1"}
    assert list(meta.loc[meta["split"] == "val", "fold"].unique()) == ["0"]
    isic2018.manifests(ham, test, out)                                      # again: the same split, fine
    recorded = dx7.copy()
    recorded.loc[0, "split"] = "val" if recorded.loc[0, "split"] == "train" else "train"
    recorded.to_csv(out / "dx7.csv", index=False)
    with pytest.raises(SystemExit, match="the recorded inner split differs"):
        isic2018.manifests(ham, test, out)
    t = pd.read_csv(out / "test-binary.csv", dtype=str)
    assert list(t["label"]) == ["others"] * 5 + ["nevus", "others"] and len(pd.read_csv(out / "test-dx7.csv")) == 7


def test_isic2018_scores_once_compares_paired_and_writes_the_tables(tmp_path, monkeypatch):
    import json

    import numpy as np
    import pandas as pd
    import pytest

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import isic2018_scoring as scoring

    monkeypatch.setattr(scoring, "SCORINGS", tmp_path / "test-scorings.csv")
    monkeypatch.setattr(scoring, "PREDICTIONS", tmp_path / "test-predictions")
    for name in ("results.md", "README.md"):
        (tmp_path / name).write_text(f"head\n<!-- isic2018:{'full' if name == 'results.md' else 'short'} -->\n"
                                     f"old\n<!-- /isic2018:{'full' if name == 'results.md' else 'short'} -->\ntail\n")
    monkeypatch.setattr(scoring, "RESULTS", tmp_path / "results.md")
    monkeypatch.setattr(scoring, "README", tmp_path / "README.md")
    y = np.repeat(np.arange(7), 3)                                          # 21 images, 3 per class
    good = np.eye(7)[y] * 0.9 + 0.1 / 7
    bad = np.roll(good, 1, axis=1)                                           # every decision one class off
    answers = {"dx7-plain-keras": good, "dx7-ml": bad}
    monkeypatch.setattr(scoring, "test_probs", lambda row, out: ([f"/x/T{i}.jpg" for i in range(21)], y,
                                                                answers[row], scoring.DX7))
    lines = scoring.score_test("dx7-plain-keras", tmp_path)
    assert [line["row"] for line in lines] == ["dx7-plain-keras", "dx7-plain-keras/nv-vs-rest"]
    assert lines[0]["balanced_accuracy"] == 1.0 and (lines[0]["ba_low"], lines[0]["ba_high"]) == (1.0, 1.0)
    assert json.loads(lines[0]["recall"])["df"] == 1.0 and lines[1]["balanced_accuracy"] == 1.0
    with pytest.raises(SystemExit, match="already scored on the official test"):
        scoring.score_test("dx7-plain-keras", tmp_path)
    scoring.score_test("dx7-ml", tmp_path)
    assert len(pd.read_csv(tmp_path / "test-scorings.csv")) == 4
    text = scoring.compare("dx7-plain-keras", "dx7-ml")
    assert text.startswith("BA(dx7-plain-keras) − BA(dx7-ml) = +1.0000 on the official test, 95 % paired bootstrap "
                           "[+1.0000, +1.0000]")
    scoring.table(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "| dx7-plain-keras | 1.000 [1.000, 1.000] |" in readme and "old" not in readme
    assert readme.startswith("head\n") and readme.endswith("tail\n")
    assert "| dx7-ml | dx7 | 0.000 [0.000, 0.000] |" in (tmp_path / "results.md").read_text()


def test_isic2018_ensemble_members_are_chosen_greedily_on_the_inner_split(tmp_path, monkeypatch):
    """Three candidate rows on 4 inner images of 2 classes (labels 0 0 1 1): A is right on class 0 only, B on
    class 1 only, C on nothing. Alone: A and B 0.5 — A is first (the first best); A + B's mean is right
    everywhere (1.0); adding C then lowers it: the members are A and B."""
    import json

    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import isic2018

    rows = {"A": [[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]], "B": [[0.4, 0.6], [0.4, 0.6], [0.1, 0.9], [0.1, 0.9]],
            "C": [[0.2, 0.8], [0.2, 0.8], [0.8, 0.2], [0.8, 0.2]]}
    for name, probs in rows.items():
        monkeypatch.setitem(isic2018.ROWS, name, ("binary.csv", "cnn", 1, []))
        (tmp_path / name / "eval-inner").mkdir(parents=True)
        pd.DataFrame({"path": list("wxyz"), "label": ["nevus", "nevus", "others", "others"],
                      "nevus": [p[0] for p in probs], "others": [p[1] for p in probs]}).to_csv(
            tmp_path / name / "eval-inner" / "predictions.csv", index=False)
    members, steps = isic2018.choose_members(["A", "B", "C"], tmp_path)
    assert members == ["A", "B"]
    assert [s["inner_balanced_accuracy"] for s in steps] == [0.5, 1.0]
    json.dumps(steps)                                                   # written to members.json as is
