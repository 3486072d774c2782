"""The bad-input table: every fault of tests/test_bad_input.py run as a user runs the command,
with its exit code and the first line of its message, written to docs/bad_input.md.

    python benchmarks/bad_input_table.py
"""
import argparse
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sys.path.insert(0, str(HERE.parent / "tests"))
    import test_bad_input as t

    root = Path(tempfile.mkdtemp(prefix="bad_input_"))
    world = t.World(root / "world")
    rows = []
    faults = t.FAULTS + [("predict", "disk full during a write (64-byte file-size limit)", t.disk_full)]
    for i, (command, fault, fn) in enumerate(faults):
        tmp = root / f"f{i}"
        tmp.mkdir()
        limit = 64 if fn is t.disk_full else None
        rc, err, argv, named, absent = t.run_fault(world, tmp, fn, limit)
        all_lines = err.splitlines()
        first = next((i for i, x in enumerate(all_lines) if "error:" in x), len(all_lines) - 1)
        shown = all_lines[first:first + 1] + [x.strip() for x in all_lines[first + 1:] if x.startswith("  ")]
        msg = re.sub(re.escape(str(root)) + r"/(world|f\d+)/", "", " ".join(shown))
        left = [str(p.relative_to(tmp)) for p in absent if p.exists()]
        rows.append(f"| `{command}` | {fault} | {rc} | {'yes' if named.name in err else 'no'} | "
                    f"{'none' if not left else ', '.join(left)} | {msg.replace('|', '/')} |")
        print(rows[-1], flush=True)
    out = HERE.parent / "docs" / "bad_input.md"
    out.write_text("# Bad input: what each command says\n\nMade by `benchmarks/bad_input_table.py` from the faults of "
                   "`tests/test_bad_input.py` (each run as a subprocess, as a user runs it; paths shortened).\n\n"
                   "| command | fault | exit code | names the file | outputs left | message |\n|---|---|---|---|---|---|\n"
                   + "\n".join(rows) + "\n")
    print(out)


if __name__ == "__main__":
    main()
