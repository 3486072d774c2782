"""The resource sampler measures runs shorter than its sampling interval too (FLARE areas)."""
import time

from semiseg.utils.profile import ResourceSampler


def test_short_run_has_areas():
    with ResourceSampler(interval=0.1) as s:
        t = time.perf_counter()
        while time.perf_counter() - t < 0.03:  # shorter than one interval
            pass
    r = s.result()
    assert r["peak_rss_mb"] > 0 and r["rss_auc_mb_s"] > 0 and r["cpu_util_auc"] >= 0
    assert r["rss_auc_mb_s"] <= r["peak_rss_mb"] * (r["wall_s"] + 0.2)
