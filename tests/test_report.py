"""semiseg report: a self-contained page with every section, checked as a person sees it, in headless
Chromium (Debian's chromium + chromedriver, installed by the README's test command)."""

import re

import pytest
from conftest import open_chromium, train_config

from semiseg.cli import main
from semiseg.report import write_report
from semiseg.training import train
from semiseg.utils import SemisegError


@pytest.fixture
def run(tiny_work, tmp_path):
    r = tmp_path / "run"
    train(tiny_work, r, train_config(iterations=6, val_every=3), progress=False)
    return r


def test_report_sections_and_refusal(run, tmp_path):
    out = write_report(run)
    assert out == run / "report.html"
    page = out.read_text()
    for h in ("Configuration", "Split", "Learning curves", "Validation (1 cases", "Best, median and worst",
              "Time and memory", "Environment"):
        assert h in page, h
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 4  # curves + best, median, worst
    assert "precision: fp32 (asked (--amp))" in page  # the run's resolved precision and how it was decided
    assert "http://" not in page and "https://" not in page  # nothing fetched when viewed
    assert (run / "report" / "metrics.csv").exists()
    # a rerun reuses the validation predictions
    before = (run / "report" / "val_pred").stat().st_mtime_ns
    write_report(run)
    assert (run / "report" / "val_pred").stat().st_mtime_ns == before
    with pytest.raises(SemisegError, match="not a semiseg run folder"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert main(["report", str(run), "--no-predict", "-o", str(tmp_path / "r.html"), "-q"]) == 0
    assert "validation not predicted" in (tmp_path / "r.html").read_text()


def test_report_in_headless_chromium(run, tmp_path):
    from selenium.webdriver.common.by import By

    write_report(run)
    d = open_chromium()
    try:
        d.get((run / "report.html").as_uri())
        assert d.title.startswith("semiseg report")
        imgs = d.find_elements(By.TAG_NAME, "img")
        assert len(imgs) == 4
        assert all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100", i) for i in imgs)
        table = d.find_element(By.ID, "cases")
        assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1
        th = table.find_elements(By.TAG_NAME, "th")[1]
        th.click()
        assert th.get_attribute("data-dir") == "asc"
        th.click()
        assert th.get_attribute("data-dir") == "desc"
        d.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        d.quit()
