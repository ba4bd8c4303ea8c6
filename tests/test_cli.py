"""The `dermo` command as a user meets it: every subcommand's --help explains each option and shows its default, one
error style, mistakes answered before TensorFlow is imported, and `import dermo.predict` prints nothing. (A real
training's output, checked line by line against conftest.ACTIONABLE_LINES: tests/test_training.py's killed-and-
resumed run.)"""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dermo.cli import COMMANDS
from dermo.cli import main as dermo

ROOT = Path(__file__).resolve().parents[1]


def help_text(name: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        dermo([name, "--help"])
    assert stop.value.code == 0
    return out.getvalue()


def option_entries(text: str) -> list[tuple[str, str]]:
    """(option spec, its help) for every optional argument of an argparse --help text."""
    entries, spec, helps = [], None, []
    for line in text.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if m and not line.startswith("   "):
            if spec is not None:
                entries.append((spec, " ".join(helps)))
            spec, helps = m.group(1), [m.group(2) or ""]
        elif spec is not None and line.startswith("    ") and line.strip():
            helps.append(line.strip())
        elif spec is not None and not line.strip():
            entries.append((spec, " ".join(helps)))
            spec, helps = None, []
    if spec is not None:
        entries.append((spec, " ".join(helps)))
    return entries


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_value_option_says_what_it_is_and_its_default(name):
    text = help_text(name)
    assert text.startswith(f"usage: dermo {name}")
    entries = option_entries(text)
    assert len(entries) >= 3, text
    missing = []
    for spec, helped in entries:
        if spec.startswith("-h, --help"):
            continue
        takes_value = bool(re.match(r"^--?[\w-]+(, --?[\w-]+)* \S", spec))
        meaning = re.sub(r"\(default: [^)]*\)", "", helped).strip()
        if not meaning or "(default: None)" in helped or (takes_value and "default" not in helped
                                                          and "required" not in helped):
            missing.append(spec)
    assert not missing, f"dermo {name}: options without a meaning or a default: {missing}"


def test_dermo_lists_its_commands_and_refuses_an_unknown_one(capsys):
    assert dermo([]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name} " in listing for name in COMMANDS)
    assert dermo(["trian"]) == 2
    assert capsys.readouterr().err.strip() == ("dermo: error: unknown command 'trian'; choose one of "
                                               + ", ".join(COMMANDS) + " (`dermo --help` says what each does)")


@pytest.mark.parametrize("argv, expected", [
    (["train", "--backbone", "B9", "--data", "x"], "dermo train: error: unknown backbone 'B9'"),
    (["train", "--image-size", "0", "--data", "x"], "dermo train: error: --image-size 0 is below the minimum 32"),
    (["train", "--epochs", "0", "--data", "x"], "dermo train: error: --epochs 0: train for at least 1 epoch"),
    # a parser mistake: the one line, not the usage block before it
    (["train", "--epochs", "abc"], "dermo train: error: argument --epochs: invalid int value: 'abc' (`dermo train "
                                   "--help` lists the options)"),
    (["evaluate", "--run", "runs/nothere"], "dermo evaluate: error: runs/nothere: run folder not found"),
    (["evaluate", "--run", "README.md", "--tta", "0"], "dermo evaluate: error: --tta 0: use 1 (none) to 8"),
    (["evaluate", "--run", "tests/conftest.py"], "dermo evaluate: error: tests/conftest.py: run folder not found"),
    (["evaluate", "--model", "gone.keras"], "dermo evaluate: error: gone.keras: model file not found"),
])
def test_option_mistakes_are_answered_before_tensorflow_is_imported(argv, expected):
    """A fresh process: the one error line comes before TensorFlow is imported (well under a second here)."""
    code = ("import sys\nfrom dermo.cli import main\nrc = main(sys.argv[1:])\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'\nsys.exit(rc)")
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith(expected) and r.stderr.count("\n") == 1, r.stderr
    print(f"{argv}: {time.perf_counter() - start:.2f} s")


def test_importing_the_package_prints_nothing(tmp_path):
    """`from dermo.predict import Predictor` (TensorFlow imported) in a user's script: no start-up lines."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", "from dermo.predict import Predictor; import keras; "
                        "keras.ops.convert_to_numpy(keras.ops.ones(2) * 2)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**env, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
