"""A screenshot of a run's report.html in headless Chromium, for the README (docs/report.png).

    python benchmarks/report_screenshot.py RUN [-o docs/report.png] [--height 2400]

Writes RUN/report.html first when it is missing (``semiseg report RUN``). Needs Debian's chromium
and chromium-driver (the README's test command installs them) and selenium (``.[test]``).
"""
import argparse
import subprocess
import sys
from pathlib import Path

from _common import chromium

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=HERE.parent / "docs" / "report.png")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=2400)
    a = ap.parse_args()

    page = a.run / "report.html"
    if not page.exists():
        subprocess.run([sys.executable, "-m", "semiseg", "report", str(a.run), "-q"], check=True)
    d = chromium(a.width, a.height)
    try:
        d.get(page.resolve().as_uri())
        a.out.parent.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(a.out))
    finally:
        d.quit()
    print(f"{a.out} ({a.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
