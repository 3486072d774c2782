"""Code health, checked with the test suite (so CI fails on a violation): ruff's rules and the
import-linter contracts of pyproject.toml (the packages form layers; inference never imports
training), every ``torch.load`` with ``weights_only=True``, and a `--help` answer from every
benchmark script."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    exe = BIN / name
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def test_ruff_is_clean():
    r = subprocess.run([_tool("ruff"), "check", "src", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_layers_hold():
    r = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout + r.stderr


def test_every_torch_load_refuses_pickled_code():
    """A checkpoint is data: each ``torch.load`` call in the package and the benchmarks passes
    ``weights_only=True`` (behaviour tested in test_engine/test_predict with a planted pickle)."""
    calls, bad = 0, []
    for f in sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                calls += 1
                ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in node.keywords)
                if not ok:
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert calls >= 1 and not bad, bad


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")))
def test_benchmark_help(script):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stdout + r.stderr
