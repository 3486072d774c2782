"""Code-health figures of a source tree: imports inside functions and the longest functions.

    python benchmarks/code_health.py [SRC_DIR]      # default: src/semiseg

An import inside a function is counted unless it names a heavy optional third-party package that
is imported lazily on purpose (the list OPTIONAL below). Prints counts, the longest functions and
exits 0; no rows go to results.csv (these are facts about the code, not measurements).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

OPTIONAL = {"monai", "SimpleITK", "nibabel", "matplotlib", "surface_distance", "cc3d", "tqdm", "scipy",
            "torch.distributed", "torch.nn.parallel", "uvicorn", "fastapi"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", nargs="?", default=str(Path(__file__).resolve().parents[1] / "src" / "semiseg"))
    ap.add_argument("--top", type=int, default=5, help="how many of the longest functions to list")
    a = ap.parse_args()
    inner, inner_all, funcs = [], 0, []
    for f in sorted(Path(a.src).rglob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append((node.end_lineno - node.lineno + 1, f"{f.relative_to(a.src)}:{node.lineno} {node.name}"))
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        inner_all += 1
                        mods = [n.name for n in sub.names] if isinstance(sub, ast.Import) else [sub.module or ""]
                        if sub.__class__ is ast.ImportFrom and sub.level:
                            inner.append(f"{f.relative_to(a.src)}:{sub.lineno} from {'.' * sub.level}{sub.module or ''}")
                        elif not any(m == o or m.startswith(o + ".") for m in mods for o in OPTIONAL):
                            inner.append(f"{f.relative_to(a.src)}:{sub.lineno} import {', '.join(mods)}")
    funcs.sort(reverse=True)
    print(f"imports inside functions: {inner_all} in all, {len(inner)} not of a heavy optional package")
    for s in inner:
        print("   ", s)
    print("longest functions (lines): " + "; ".join(f"{n} {w}" for n, w in funcs[:a.top]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
