"""Planning: nnU-Net's spacing rule, topology, budgets, normalisation choice, forced spacing."""
import json

import numpy as np
import pytest
from conftest import make_dataset

from semiseg.planning import plan
from semiseg.planning.cost import DeviceBudget, estimate_cost, plan_configuration
from semiseg.planning.normalization import parse_windows
from semiseg.planning.spacing import forced_inference_spacing, target_spacing
from semiseg.planning.topology import unet_topology
from semiseg.utils import SemisegError


def test_target_spacing_median_and_anisotropic_rule():
    sp = np.array([[1.0, 0.8, 0.8], [1.2, 0.8, 0.8], [1.1, 0.9, 0.9]])
    sh = np.array([[100, 200, 200]] * 3)
    t, why = target_spacing(sp, sh)
    assert t == pytest.approx([1.1, 0.8, 0.8]) and why == "median spacing"
    # thick slices, few of them: the coarse axis takes its 10th percentile
    sp = np.array([[5.0, 1, 1]] * 2 + [[10.0, 1, 1]] * 8)
    sh = np.array([[10, 256, 256]] * 10)
    t, why = target_spacing(sp, sh)
    assert t[0] == pytest.approx(5.0) and "anisotropic" in why


def test_topology_does_not_pool_thick_axis_first():
    topo = unet_topology([4.0, 1.0, 1.0], [16, 128, 128])
    assert topo["pool_kernels"][0] == [1, 2, 2]  # z is 4x coarser: pool in-plane first
    assert topo["conv_kernels"][0] == [1, 3, 3]  # and do not convolve across thick slices
    assert topo["pool_kernels"][2] == [2, 2, 2]  # once spacings even out, pool all axes
    assert topo["n_stages"] == 6


def test_cost_grows_with_patch_and_batch():
    topo = unet_topology([1, 1, 1], [64, 64, 64])
    a = estimate_cost([64, 64, 64], topo, 1, 2, 16, 256, 2, "cpu")
    b = estimate_cost([64, 64, 64], topo, 1, 2, 16, 256, 4, "cpu")
    assert b["memory_gb"] > a["memory_gb"] and b["seconds"] == pytest.approx(2 * a["seconds"])


@pytest.mark.parametrize("mem", [1.0, 4.0])
def test_configuration_fits_budget(mem):
    b = DeviceBudget("cpu", mem, 2.0, 16, 256)
    c = plan_configuration([1.0, 1.0, 1.0], [160, 200, 200], 1, 3, b, 3, 1e9)
    assert c["estimated_memory_gb"] <= mem + 1e-6 or "minimum" in c["why"]
    assert c["estimated_seconds_per_iteration"] <= 2.0 + 1e-6
    div = np.prod(np.array(c["pool_kernels"]), 0)
    assert all(p % d == 0 for p, d in zip(c["patch_size"], div))
    assert c["batch_size"] >= 2


def test_smaller_budget_gives_smaller_patch():
    big = plan_configuration([1, 1, 1], [160, 200, 200], 1, 3, DeviceBudget("cpu", 16, 8.0, 16, 256), 3, 1e9)
    small = plan_configuration([1, 1, 1], [160, 200, 200], 1, 3, DeviceBudget("cpu", 16, 1.0, 16, 256), 3, 1e9)
    assert np.prod(small["patch_size"]) < np.prod(big["patch_size"])


def test_plan_on_dataset_writes_readable_plans(tiny, tmp_path):
    p = plan(tiny, tmp_path / "work", progress=False, workers=1)
    on_disk = json.loads((tmp_path / "work" / "plans.json").read_text())
    assert on_disk["configurations"]["3d"]["patch_size"] == p["configurations"]["3d"]["patch_size"]
    assert set(on_disk["configurations"]) == {"3d", "2d"}
    assert "gpu" in on_disk["configurations"]["3d"]
    assert on_disk["target_spacing"] == pytest.approx([2.0, 1.0, 1.0])  # z, y, x
    assert on_disk["normalization"][0]["scheme"] == "zscore"
    assert on_disk["configurations"]["2d"]["slice_axis"] == 0
    assert json.loads((tmp_path / "work" / "split.json").read_text())["val"] == ["CASE_003"]


def test_plan_refuses_work_inside_dataset(tiny):
    with pytest.raises(SemisegError, match="inside the dataset"):
        plan(tiny, tiny / "work", progress=False, workers=1)


def test_ct_normalisation_and_windows(tmp_path):
    root = make_dataset(tmp_path / "CT", channel_name="CT")
    p = plan(root, tmp_path / "w1", progress=False, workers=1)
    n = p["normalization"][0]
    assert n["scheme"] == "ct" and n["stats"] == "foreground" and n["clip"][0] < n["clip"][1]
    p = plan(root, tmp_path / "w2", ct_stats="all", progress=False, workers=1)
    assert p["normalization"][0]["stats"] == "all_voxels"
    p = plan(root, tmp_path / "w3", ct_windows="abdomen,chest,bone", progress=False, workers=1)
    assert p["num_input_channels"] == 3 and p["normalization"][0]["scheme"] == "ct_windows"
    assert parse_windows("liver:60:150")[0] == ("liver", 60.0, 150.0)
    with pytest.raises(SemisegError):
        parse_windows("nonsense")


def test_unlabeled_scans_enter_the_all_voxel_statistics(tmp_path):
    root = make_dataset(tmp_path / "D", n=6)
    a = plan(root, tmp_path / "w1", labeled=1, progress=False, workers=1)
    assert a["fingerprint"]["n_cases"] == 5 and a["fingerprint"]["n_labeled"] == 1
    assert a["fingerprint"]["intensity"][0]["n_cases_foreground"] == 1


def test_forced_spacing_rule_seed003():
    f = [0.5, 0.75, 0.75]
    assert forced_inference_spacing(f, [2.5, 0.8, 0.8], 100, "slices") == [2.5, 0.75, 0.75]
    assert forced_inference_spacing(f, [1.0, 0.8, 0.8], 300, "slices") == [0.5, 0.75, 0.75]
    assert forced_inference_spacing(f, [1.0, 0.8, 0.8], 1200, "slices") == pytest.approx([0.8, 0.75, 0.75])
    assert forced_inference_spacing([None, 2.0, 2.0], [3.0, 1, 1], 10) == [3.0, 2.0, 2.0]


def test_plan_names_a_label_that_does_not_fit_its_image(tiny, tmp_path):
    from conftest import geom

    from semiseg.data.io import read_image, write_image

    p = tiny / "labelsTr" / "CASE_001.nii.gz"
    a, g = read_image(p)
    write_image(a[:, :, :-2].copy(), geom(a[:, :, :-2].shape, g.spacing, g.origin), p)
    with pytest.raises(SemisegError, match="CASE_001.nii.gz: label geometry differs"):
        plan(tiny, tmp_path / "w", progress=False, workers=1)


def test_student_plan(tmp_path):
    """Chen et al.'s student: 1.5x coarser spacing, half the widths, at most 256, inference step 0.8."""
    from semiseg.inference.runs import Model, model_step

    ds = make_dataset(tmp_path / "D", n=3, shape=(12, 24, 24))
    t = plan(ds, tmp_path / "t", progress=False, workers=1)
    s = plan(ds, tmp_path / "s", progress=False, workers=1, student=True)
    assert s["target_spacing"] == pytest.approx([1.5 * v for v in t["target_spacing"]])
    assert "student" in s["target_spacing_why"] and s["student"] and not t["student"]
    for name in ("3d", "2d"):
        c = s["configurations"][name]
        assert c["features_per_stage"][0] == 8 and max(c["features_per_stage"]) <= 256
        assert c["gpu"]["features_per_stage"][0] == 16
    assert t["configurations"]["3d"]["features_per_stage"][0] == 16
    f = plan(ds, tmp_path / "f", progress=False, workers=1, spacing_factor=2.0)
    assert f["target_spacing"] == pytest.approx([2 * v for v in t["target_spacing"]]) and not f["student"]
    assert model_step(Model(tmp_path, s, {}, []), None) == 0.8
    assert model_step(Model(tmp_path, t, {}, []), None) == 0.5 and model_step(Model(tmp_path, s, {}, []), 0.6) == 0.6
    with pytest.raises(SemisegError, match="spacing-factor"):
        plan(ds, tmp_path / "g", progress=False, workers=1, spacing_factor=-1)


def test_ct_windows_map_hounsfield_units_to_three_channels(tmp_path):
    """A CT-like volume in HU (air, fat, soft tissue, bone) through the abdomen/chest/bone windows."""
    from semiseg.preprocessing.normalize import normalize

    root = make_dataset(tmp_path / "CT", channel_name="CT")
    p = plan(root, tmp_path / "w", ct_windows="abdomen,chest,bone", progress=False, workers=1)
    hu = np.array([-1000.0, -100.0, 40.0, 1000.0, 3000.0], np.float32).reshape(1, 1, 1, 5)
    out = normalize(hu, p["normalization"], None)
    assert out.shape == (3, 1, 1, 5)
    lo = {"abdomen": 40 - 200, "chest": -600 - 750, "bone": 400 - 900}
    width = {"abdomen": 400, "chest": 1500, "bone": 1800}
    for i, name in enumerate(["abdomen", "chest", "bone"]):
        want = np.clip((hu[0, 0, 0] - lo[name]) / width[name], 0, 1)
        assert np.allclose(out[i, 0, 0], want, atol=1e-6), name
    assert out[0, 0, 0, 2] == pytest.approx(0.5)       # soft tissue at the abdomen window's level
    assert out[1, 0, 0, 0] == pytest.approx(350 / 1500)  # air inside the lung window
    assert out[0, 0, 0, 4] == 1.0 and out[0, 0, 0, 0] == 0.0  # clipped


def test_reservoir_keeps_everything_until_full_then_a_fixed_size():
    """Under its size the reservoir is the plain concatenation in case order (plans unchanged); over it,
    exactly ``size`` values, the same whatever order of merging (keys decide)."""
    from semiseg.planning.fingerprint import Reservoir

    rng = np.random.default_rng(0)
    parts = [(rng.normal(size=50).astype(np.float32), rng.random(50)) for _ in range(6)]
    r = Reservoir(size=1000)
    for v, k in parts:
        r.add(v, k)
    assert np.array_equal(r.values, np.concatenate([v for v, _ in parts]))
    small = Reservoir(size=120)
    for v, k in parts:
        small.add(v, k)
    keys = np.concatenate([k for _, k in parts]).astype(np.float32)
    expect = np.concatenate([v for v, _ in parts])[np.sort(np.argsort(keys, kind="stable")[:120])]
    assert small.values.size == 120 and np.array_equal(np.sort(small.values), np.sort(expect))


def test_fingerprint_statistics_do_not_depend_on_workers(tmp_path, monkeypatch):
    """With a reservoir smaller than the samples (so it subsamples), 1 and 2 worker processes give the
    same intensity statistics, bit for bit."""
    from semiseg.data.checking import load_dataset
    from semiseg.planning import fingerprint as fpmod

    monkeypatch.setattr(fpmod, "RESERVOIR", 3000)
    monkeypatch.setattr(fpmod.Reservoir.__init__, "__defaults__", (3000,))
    ds = load_dataset(make_dataset(tmp_path / "T", n=6, shape=(12, 24, 24)))
    split = ds.split()
    a = fpmod.fingerprint(ds, split, workers=1, progress=False)
    b = fpmod.fingerprint(ds, split, workers=2, progress=False)
    assert a["intensity"] == b["intensity"]
    assert a["intensity"][0]["foreground"]["median"] != 0


def test_a_plans_json_missing_what_readers_need_is_refused_by_name(tmp_path):
    from semiseg.planning import load_plans

    ds = make_dataset(tmp_path / "D")
    plan(ds, tmp_path / "w", progress=False, workers=1)
    f = tmp_path / "w" / "plans.json"
    good = json.loads(f.read_text())
    assert load_plans(tmp_path / "w").num_classes == good["num_classes"]
    bad = dict(good)
    del bad["target_spacing"]
    bad["num_classes"] = "3"
    bad["configurations"] = dict(good["configurations"], **{"3d": {k: v for k, v in
                                                                  good["configurations"]["3d"].items()
                                                                  if k != "patch_size"}})
    f.write_text(json.dumps(bad))
    with pytest.raises(SemisegError) as e:
        load_plans(tmp_path / "w")
    msg = str(e.value)
    assert str(f) in msg and "num_classes (not an integer)" in msg and "target_spacing (missing)" in msg
    assert "configurations.3d.patch_size (missing)" in msg
    f.write_text("[1, 2]")
    with pytest.raises(SemisegError, match="not a plans.json"):
        load_plans(tmp_path / "w")
