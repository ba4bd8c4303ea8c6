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
