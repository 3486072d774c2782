"""A screenshot of a run's report.html in headless Chromium, for the README (docs/report.png).

    python benchmarks/report_screenshot.py RUN [-o docs/report.png] [--height 2400]

Writes RUN/report.html first when it is missing (``semiseg report RUN``). Needs Debian's chromium
and chromium-driver (the README's test command installs them) and selenium (``.[test]``).
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=HERE.parent / "docs" / "report.png")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=2400)
    a = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    page = a.run / "report.html"
    if not page.exists():
        subprocess.run([sys.executable, "-m", "semiseg", "report", str(a.run), "-q"], check=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={a.width},{a.height}",
                "--hide-scrollbars"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        d.get(page.resolve().as_uri())
        a.out.parent.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(a.out))
    finally:
        d.quit()
    print(f"{a.out} ({a.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
