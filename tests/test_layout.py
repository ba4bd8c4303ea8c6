"""The package layout: imports only go down the stages, no import cycle, every `dermo` command answers --help,
modules stay small."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dermo"
# stage of each top-level name under dermo/: a module may import its own stage's package or lower stages only
STAGE = {"console": 0, "errors": 0.5, "data": 1, "losses": 1, "metrics": 1, "preprocessing": 2, "model": 2, "run": 2,
         "pipeline": 3, "predict": 4, "evaluation": 5, "training": 6, "export": 6, "experiments": 7,
         "viewer": 8, "cli": 9}
MAX_LINES = 320


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if rel.name == "__main__":
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.append(".".join(parts))
    return names


def _imports(path: Path) -> set[str]:
    """Every dermo module named by an import statement anywhere in the file (also inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("dermo")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dermo"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _stage_of(module: str) -> tuple[str, float]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, STAGE.get(top, -1)


def test_every_module_has_a_stage():
    unknown = sorted({_stage_of(m)[0] for m in _modules() if m != "dermo" and _stage_of(m)[1] < 0})
    assert not unknown, f"add these to STAGE (and to dermo/__init__.py's map): {unknown}"


def test_imports_only_go_down_the_stages():
    known = set(_modules())
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        me = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if me == "dermo.__init__":
            continue                           # the root: version, and dermo.console's quiet logs before TF
        my_top, my_stage = _stage_of(me)
        for target in _imports(path):
            if target not in known:
                continue                       # `from dermo.x import name`: the module itself is checked
            top, stage = _stage_of(target)
            if top != my_top and stage >= my_stage:
                wrong.append(f"{me} imports {target} (stage {my_stage} -> {stage})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    known = set(_modules())
    graph = {m: set() for m in known}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        rel = path.relative_to(ROOT).with_suffix("")
        me = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[me] = {t for t in _imports(path) if t in known and t != me}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_in_a_fresh_process(order):
    modules = _modules()
    if order == "reversed":
        modules = modules[::-1]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    r = subprocess.run([sys.executable, "-c", code, *modules], cwd=ROOT, capture_output=True, text=True,
                       env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert r.returncode == 0, r.stderr[-2000:]


def test_every_command_of_dermo_answers_help():
    """`python -m dermo COMMAND --help` for every command (the installed `dermo` script runs the same main)."""
    from dermo.cli import COMMANDS

    code = ("import contextlib, io, sys\nfrom dermo.cli import main\nfor name in sys.argv[1:]:\n"
            "    out = io.StringIO()\n    with contextlib.redirect_stdout(out):\n        try:\n"
            "            main([name, '--help'])\n        except SystemExit as e:\n            assert e.code == 0, name\n"
            "    assert out.getvalue().startswith(f'usage: dermo {name}'), (name, out.getvalue()[:200])\n")
    r = subprocess.run([sys.executable, "-c", code, *COMMANDS], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"split these modules by job (over {MAX_LINES} lines): {big}"
