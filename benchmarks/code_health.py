"""Code-health figures of a checkout: imports inside functions, the longest functions, raw dict
indexing of plans, where training flags are defined, repeated blocks.

    python benchmarks/code_health.py [SRC_DIR]      # default: src/semiseg of this checkout
    python benchmarks/code_health.py /tmp/old/src/semiseg --top 10    # another commit's tree

Reads the files as text (nothing is imported, so it works on any commit's tree):

- an import inside a function is counted unless it names a heavy optional third-party package that
  is imported lazily on purpose (the list OPTIONAL below);
- plans indexing: ``x["key"]`` and ``x.get("key")`` with a key of ``plans.json`` or of one of its
  configurations (PLAN_KEYS), in the package outside ``planning/`` (which owns the typed view);
- training flags: ``add_argument`` calls in the modules that give train, selftrain and fit their flags
  (TRAINING_COMMANDS) whose flag is a field of ``TrainConfig`` (``--name-with-dashes``) or one of the
  flags that fill a field (DERIVED), and how many of them pass a default;
- repeated blocks: runs of 6 or more consecutive lines (stripped; blank lines, comments and imports
  passed over) that stand again elsewhere in ``src/``, ``tests/`` or ``benchmarks/`` of the checkout.

Prints the figures and exits 0; no rows go to results.csv (these are facts about the code, not
measurements).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import sys
from collections import defaultdict
from pathlib import Path

OPTIONAL = {"monai", "SimpleITK", "nibabel", "matplotlib", "surface_distance", "cc3d", "tqdm", "scipy",
            "torch.distributed", "torch.nn.parallel", "uvicorn", "fastapi"}


PLAN_KEYS = {  # keys of plans.json and its configurations that no other dict of semiseg uses
    "configurations", "target_spacing", "num_classes", "num_input_channels", "dataset_path", "split",
    "normalization", "intensity_properties", "resampling", "fingerprint", "semiseg_version", "channel_names",
    "file_ending", "patch_size", "batch_size", "slice_axis", "median_shape", "pool_op_kernel_sizes",
    "conv_kernel_sizes", "features_per_stage", "n_stages", "slice_position"}
TRAINING_COMMANDS = ("cli/train.py", "training/")  # where train, selftrain and fit get their flags
DERIVED = {"--base-features", "--depth", "--no-augment", "--elastic", "--labeled", "--labeled-list",
           "--labeled-key", "--config"}
MIN_LINES = 6


def plans_indexing(src: Path) -> list[str]:
    """``x["key"]``/``x.get("key")`` with a plans key, outside planning/."""
    hits = []
    for f in sorted(src.rglob("*.py")):
        if f.relative_to(src).parts[0] == "planning":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and node.args and isinstance(node.args[0], ast.Constant):
                key = node.args[0].value
            if isinstance(key, str) and key in PLAN_KEYS:
                hits.append(f"{f.relative_to(src)}:{node.lineno} {key}")
    return hits


def training_flags(src: Path) -> tuple[list[str], list[str]]:
    """(add_argument calls of a training flag in the modules that give train, selftrain and fit their
    flags, those of them that pass a default)."""
    names = set(DERIVED)
    cfg = src / "training" / "config.py"
    for node in ast.walk(ast.parse(cfg.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == "TrainConfig":
            names |= {"--" + n.target.id.replace("_", "-") for n in node.body if isinstance(n, ast.AnnAssign)}
    calls, defaults = [], []
    for f in sorted(src.rglob("*.py")):
        if not str(f.relative_to(src)).startswith(TRAINING_COMMANDS):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr == "add_argument" and node.args and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value in names:
                where = f"{f.relative_to(src)}:{node.lineno} {node.args[0].value}"
                calls.append(where)
                if any(k.arg == "default" and not (isinstance(k.value, ast.Constant) and k.value.value is None)
                       for k in node.keywords):
                    defaults.append(where)
    return calls, defaults


def _code_lines(f: Path) -> list[tuple[int, str]]:
    out = []
    for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
        t = " ".join(line.split())
        if t and not t.startswith(("#", "import ", "from ")) and t not in ("(", ")", "]", "}", "),", "],", "},"):
            out.append((i, t))
    return out


def repeated_blocks(root: Path) -> tuple[int, int, list[str]]:
    """(maximal runs of >= MIN_LINES lines that occur in another place too, their lines, the longest)."""
    files = [f for d in ("src", "tests", "benchmarks") for f in sorted((root / d).rglob("*.py"))]
    lines = {f: _code_lines(f) for f in files}
    where = defaultdict(list)
    for f, ls in lines.items():
        for k in range(len(ls) - MIN_LINES + 1):
            h = hashlib.sha1("\n".join(t for _, t in ls[k:k + MIN_LINES]).encode()).hexdigest()
            where[h].append((f, k))
    runs = []
    for f, ls in lines.items():
        rep = [False] * len(ls)
        for k in range(len(ls) - MIN_LINES + 1):
            h = hashlib.sha1("\n".join(t for _, t in ls[k:k + MIN_LINES]).encode()).hexdigest()
            if len(where[h]) > 1:
                rep[k:k + MIN_LINES] = [True] * MIN_LINES
        k = 0
        while k < len(ls):
            if rep[k]:
                j = k
                while j < len(ls) and rep[j]:
                    j += 1
                runs.append((j - k, f"{f.relative_to(root)}:{ls[k][0]}-{ls[j - 1][0]}"))
                k = j
            else:
                k += 1
    runs.sort(reverse=True)
    return len(runs), sum(n for n, _ in runs), [f"{n} {w}" for n, w in runs[:5]]


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
    src = Path(a.src)
    hits = plans_indexing(src)
    per_file = defaultdict(int)
    for h in hits:
        per_file[h.split(":")[0]] += 1
    print(f"plans/configuration dict indexing outside planning/: {len(hits)} (most: " + ", ".join(
        f"{f} {n}" for f, n in sorted(per_file.items(), key=lambda x: -x[1])[:6]) + ")")
    calls, defaults = training_flags(src)
    files = sorted({c.split(":")[0] for c in calls})
    print(f"training flags defined by hand (add_argument): {len(calls)} in {', '.join(files) or 'no file'}; "
          f"{len(defaults)} of them with a default of their own")
    n, lines, longest = repeated_blocks(src.parents[1])
    print(f"repeated blocks (>= {MIN_LINES} lines, src/tests/benchmarks): {n} runs, {lines} lines; longest: "
          + "; ".join(longest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
