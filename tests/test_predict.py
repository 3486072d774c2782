"""semiseg predict: outputs in the input's exact geometry, skip/overwrite, ensembles, TTA, refusals."""

import json

import numpy as np
import pytest
import torch
from conftest import geom, train_config

from semiseg.data.io import read_image, write_image
from semiseg.inference.postprocessing import choose, gaining_classes
from semiseg.inference.predict import predict_folder
from semiseg.inference.runs import load_run
from semiseg.inference.sliding_window import keep_largest_component, probs_to_original, sliding_window_probs
from semiseg.training import train
from semiseg.utils import SemisegError


def _inputs(tmp_path, n=2):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(1)
    # an oblique direction and odd origin/spacing: the output must copy them exactly
    c, s = np.cos(0.3), np.sin(0.3)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    for i in range(n):
        img = rng.normal(50, 10, (11, 23, 27)).astype(np.float32)
        write_image(img, geom((11, 23, 27), (0.9, 1.1, 2.3), origin=(3.5, -7.25, 11.0), direction=direction),
                    d / f"IN_{i:03d}_0000.nii.gz")
    return d


def test_outputs_match_input_geometry(run, tmp_path):
    d = _inputs(tmp_path)
    out = tmp_path / "out"
    r = predict_folder([str(run)], d, out, profile=str(tmp_path / "p.csv"), save_probabilities=True,
                       progress=False)
    assert r["done"] == 2
    for i in range(2):
        a, g = read_image(out / f"IN_{i:03d}.nii.gz")
        _, gi = read_image(d / f"IN_{i:03d}_0000.nii.gz")
        assert a.shape == (11, 23, 27)
        assert np.allclose(g.spacing, gi.spacing) and np.allclose(g.origin, gi.origin)
        assert np.allclose(g.direction, gi.direction, atol=1e-6)
        p = np.load(out / f"IN_{i:03d}.npz")["probabilities"]
        assert p.shape == (3, 11, 23, 27) and np.allclose(p.astype(np.float32).sum(0), 1, atol=2e-2)
        assert set(np.unique(a)) <= {0, 1, 2}
    prof = (tmp_path / "p.csv").read_text().splitlines()
    assert prof[0].startswith("case,seconds,peak_rss_mb") and len(prof) == 3
    # done cases are skipped, --overwrite redoes them
    assert predict_folder([str(run)], d, out, progress=False)["skipped"] == 2
    assert predict_folder([str(run)], d, out, overwrite=True, progress=False)["done"] == 2


def test_ensemble_tta_and_2d(tiny_work, run, tmp_path):
    r2 = tmp_path / "run2d"
    train(tiny_work, r2, train_config(iterations=2, configuration="2d"), progress=False)
    d = _inputs(tmp_path, 1)
    res = predict_folder([str(run), str(r2), f"{run}@final"], d, tmp_path / "o", tta=True, step=1.0, largest_component=True,
                         progress=False)
    assert res["done"] == 1
    seg, _ = read_image(tmp_path / "o" / "IN_000.nii.gz")
    assert set(np.unique(seg)) <= {0, 1, 2}
    # the ensemble is the mean of its members' probabilities, each member with its own plan (3D and 2D)
    from semiseg.data.dataset import Case, read_case_image
    from semiseg.inference.predict import predict_case
    from semiseg.inference.runs import load_models

    image, g = read_case_image(Case("IN_000", [d / "IN_000_0000.nii.gz"]))
    members = [load_models([r], "best", None, torch.device("cpu"), amp="off") for r in (str(run), str(r2),
                                                                                          f"{run}@final")]
    assert all(m[0].amp == "off" for m in members)
    ens, _ = predict_case([m[0] for m in members], image, g, step=1.0, tta=True)
    singles = [predict_case(m, image, g, step=1.0, tta=True)[0] for m in members]
    assert torch.allclose(ens, sum(singles) / 3, atol=1e-6)
    assert not torch.allclose(singles[0], singles[1], atol=1e-3)  # the members differ: the mean is not trivial


def test_a_run_of_an_earlier_version_is_recorded_and_predicts(run, tmp_path, capsys):
    """Run folders made before networks.json existed: the command line writes the record from the
    run's config.json and plans.json, identical to what training writes now."""
    import json

    from semiseg.cli import main

    record = json.loads((run / "networks.json").read_text())
    (run / "networks.json").unlink()
    d = _inputs(tmp_path, 1)
    with pytest.raises(SemisegError, match="networks.json: missing; the run was made by an earlier semiseg"):
        predict_folder([str(run)], d, tmp_path / "x", progress=False)
    assert main(["predict", f"{run}@final", "-i", str(d), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert "made by an earlier semiseg; wrote its networks.json" in capsys.readouterr().out
    assert json.loads((run / "networks.json").read_text()) == record
    assert (tmp_path / "o" / "IN_000.nii.gz").exists()


def test_refusals(run, tmp_path):
    d = _inputs(tmp_path, 1)
    with pytest.raises(SemisegError, match="output folder is the input folder"):
        predict_folder([str(run)], d, d, progress=False)
    with pytest.raises(SemisegError, match="not a semiseg run"):
        predict_folder([str(tmp_path)], d, tmp_path / "o", progress=False)
    (run / "checkpoints" / "best.pt").write_bytes(b"garbage")
    with pytest.raises(SemisegError, match="cannot read the checkpoint"):
        predict_folder([str(run)], d, tmp_path / "o", progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "X_0000.nii.gz").write_bytes(b"not an image")
    with pytest.raises(SemisegError, match="X_0000"):
        predict_folder([str(run)], bad, tmp_path / "o2", checkpoint="final", progress=False)
    assert not (tmp_path / "o2" / "X.nii.gz").exists()


def test_sliding_window_tta_is_mirror_invariant():
    # a network that is itself mirror-equivariant gives the same result with and without TTA
    net = torch.nn.Conv3d(1, 2, 1, bias=False)  # pointwise: mirror-equivariant whatever the windows
    with torch.no_grad():
        net.weight[0] = 1.0
        net.weight[1] = -1.0
    data = np.random.default_rng(0).normal(size=(1, 9, 17, 13)).astype(np.float32)
    cfg = {"patch_size": [8, 8, 8]}
    a = sliding_window_probs([net], data, cfg, tta=False, device=torch.device("cpu"), amp="off")
    b = sliding_window_probs([net], data, cfg, tta=True, device=torch.device("cpu"), amp="off")
    assert a.shape == (2, 9, 17, 13) and torch.allclose(a, b, atol=1e-6)
    # and the result is the softmax of the network's own output: the windows blend to it exactly
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(data)[None]), 1)[0]
    assert torch.allclose(a, ref, atol=1e-6)


def test_amp_is_honoured(monkeypatch):
    """--amp off computes in float32; bf16 autocast is used only when asked (or by auto on a CPU with bf16)."""
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            w = torch.ones(2, 1, 1, 1, 1)
            y = torch.nn.functional.conv3d(x, w)
            seen.append(y.dtype)
            return y

    data = np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype(np.float32)
    cfg = {"patch_size": [8, 8, 8]}
    sliding_window_probs([Probe()], data, cfg, device=torch.device("cpu"), amp="off")
    sliding_window_probs([Probe()], data, cfg, device=torch.device("cpu"), amp="bf16")
    assert seen == [torch.float32, torch.bfloat16]


def test_probs_to_original_and_largest_component():
    props = {"shape_after_crop": [4, 4, 4], "original_shape": [6, 6, 6], "bbox": [[1, 5], [1, 5], [2, 6]]}
    p = torch.zeros(2, 2, 2, 2)
    p[1] = 1
    full = probs_to_original(p, props)
    assert full.shape == (2, 6, 6, 6) and full[1, 1:5, 1:5, 2:6].min() == 1 and full[0, 0].min() == 1
    seg = np.zeros((5, 5, 5), np.uint8)
    seg[0:2, 0:2, 0:2] = 1
    seg[4, 4, 4] = 1
    seg[2, 2, 2] = 2
    k = keep_largest_component(seg)
    assert k[4, 4, 4] == 0 and k[0, 0, 0] == 1 and k[2, 2, 2] == 2


@pytest.mark.parametrize("shape,roi,step,batch", [((37, 70, 81), (20, 32, 40), 0.5, 2), ((37, 70, 81), (20, 32, 40), 0.8, 2),
                                                  ((10, 50, 61), (16, 32, 40), 0.5, 3), ((1, 45, 50), (1, 32, 32), 0.5, 16)])
def test_blend_windows_is_monais_sliding_window(shape, roi, step, batch):
    """The sliding window written to keep MONAI's import out of start-up gives MONAI's result exactly
    (placement, Gaussian weights, padding of an image smaller than the patch, 2D slice windows)."""
    from monai.inferers import sliding_window_inference

    from semiseg.inference.sliding_window import blend_windows

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1)
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        ref = sliding_window_inference(x, roi, batch, net, overlap=1 - step, mode="gaussian", sigma_scale=0.125)
        got = blend_windows(x, roi, batch, net, step)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-6)


def test_one_bad_case_does_not_stop_the_batch(run, tmp_path, capsys):
    """Good cases are predicted, the bad one is named at the end with exit code 2; a rerun after the
    fix predicts only it; --stop-on-error stops at the bad one."""
    from semiseg.cli import main

    d = _inputs(tmp_path, 3)
    good = (d / "IN_001_0000.nii.gz").read_bytes()
    (d / "IN_001_0000.nii.gz").write_bytes(good[: len(good) // 2])  # truncated
    out = tmp_path / "o"
    assert main(["predict", str(run), "-i", str(d), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "1 case(s) failed" in err and "IN_001_0000.nii.gz" in err and "2 predicted" in err
    assert sorted(p.name for p in out.iterdir()) == ["IN_000.nii.gz", "IN_002.nii.gz"]
    (d / "IN_001_0000.nii.gz").write_bytes(good)
    r = predict_folder([str(run)], d, out, progress=False)
    assert r["done"] == 1 and r["skipped"] == 2
    (d / "IN_000_0000.nii.gz").write_bytes(b"broken")
    with pytest.raises(SemisegError, match="IN_000_0000"):
        predict_folder([str(run)], d, tmp_path / "o3", progress=False, stop_on_error=True)
    assert not any((tmp_path / "o3").iterdir())


def test_predict_twice_gives_identical_files(run, tmp_path):
    d = _inputs(tmp_path, 2)
    predict_folder([str(run)], d, tmp_path / "a", progress=False, tta=True)
    predict_folder([str(run)], d, tmp_path / "b", progress=False, tta=True)
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_a_planted_pickle_in_a_run_is_refused(run, tmp_path):
    """A run folder whose checkpoint would run a command when unpickled: predict refuses it (exit 2)
    and the command never runs (weights_only=True)."""
    import os

    from semiseg.cli import main

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"nets": {"net": Payload()}, "iteration": 1}, run / "checkpoints" / "best.pt")
    assert main(["predict", str(run), "-i", str(_inputs(tmp_path, 1)), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert not marker.exists() and not (tmp_path / "o" / "IN_000.nii.gz").exists()


def test_gaining_classes_known_answers():
    assert gaining_classes([0.80, float("nan"), 0.50, 0.7], [0.81, 0.90, 0.50, 0.6]) == [1]
    assert gaining_classes([0.5, 0.5], [0.52, 0.6], margin=0.05) == [2]


def test_postprocessing_choice_known_answers():
    """nnU-Net's order: the foreground as one when it raises the mean, then classes on top of it."""
    plain = [0.80, 0.70, 0.50]
    fg_helps = {"largest": [0.81, 0.60, 0.55], "foreground": [0.82, 0.72, 0.52],
                "foreground_largest": [0.82, 0.65, 0.60]}
    assert choose(plain, fg_helps) == [[1, 2, 3], 3]  # class 1 gains nothing more on top of the foreground step
    fg_hurts = dict(fg_helps, foreground=[0.80, 0.60, 0.52])
    assert choose(plain, fg_hurts) == [1, 3]
    assert choose(plain, {k: plain for k in fg_helps}) == []
    assert choose([0.8], {"largest": [0.85], "foreground": [0.85], "foreground_largest": [0.85]}) == [1]  # one class


def test_largest_component_of_a_region_keeps_touching_classes():
    """A region step ([1, 2]) keeps the largest island of the foreground as one: a small class
    touching a larger one survives it, a far island of either class does not."""
    seg = np.zeros((1, 12, 12), np.uint8)
    seg[0, 2:6, 2:6] = 1   # class 1: 16 px
    seg[0, 2:6, 6:7] = 2   # class 2 touching it: 4 px
    seg[0, 9:12, 9:12] = 2  # a far island of class 2: 9 px, class 2's largest component
    per_class = keep_largest_component(seg, [2])
    assert per_class[0, 2, 6] == 0 and per_class[0, 10, 10] == 2  # per class: the true part is dropped
    region = keep_largest_component(seg, [[1, 2]])
    assert region[0, 2, 6] == 2 and region[0, 3, 3] == 1 and region[0, 10, 10] == 0
    assert np.array_equal(keep_largest_component(seg, [[1, 2], 2]), region)


def test_postprocessing_is_chosen_on_validation_and_applied_to_its_checkpoint(tiny_work, tmp_path):
    r = tmp_path / "r"
    train(tiny_work, r, train_config(iterations=4, val_every=2), progress=False)
    rec = json.loads((r / "postprocessing.json").read_text())
    summ = json.loads((r / "summary.json").read_text())
    assert rec["iteration"] == summ["best_iteration"] and rec["cases"] == summ["val"] == 1
    plain = rec["val_dice"]
    variants = {k: rec[f"val_dice_{k}"] for k in ("largest", "foreground", "foreground_largest")}
    assert all(list(v) == list(plain) == ["a", "b"] for v in variants.values())
    assert rec["largest_component_classes"] == choose(list(plain.values()),
                                                      {k: list(v.values()) for k, v in variants.items()})
    d = _inputs(tmp_path, n=2)
    forced = {v: predict_folder([str(r)], d, tmp_path / f"forced{v}", largest_component=v, progress=False)
              for v in (True, False)}
    assert forced[True]["done"] == 2
    files = ("IN_000.nii.gz", "IN_001.nii.gz")

    def same(a, b):
        return all(np.array_equal(read_image(tmp_path / a / f)[0], read_image(tmp_path / b / f)[0]) for f in files)

    assert not same("forcedTrue", "forcedFalse")  # the tiny network leaves scattered components
    for chosen, like in (([1, 2], "forcedTrue"), ([], "forcedFalse"), ([[1, 2], 1, 2], "forcedTrue")):
        (r / "postprocessing.json").write_text(json.dumps(dict(rec, largest_component_classes=chosen)))
        assert load_run(r).settings == {"largest_component": chosen}
        out = f"chosen{len(chosen)}"
        if chosen and isinstance(chosen[0], list):  # the foreground step first: the steps on the plain prediction
            predict_folder([str(r)], d, tmp_path / out, progress=False)
            assert all(np.array_equal(read_image(tmp_path / out / f)[0], keep_largest_component(
                read_image(tmp_path / "forcedFalse" / f)[0], chosen)) for f in files)
            continue
        predict_folder([str(r)], d, tmp_path / out, progress=False)
        assert same(out, like)
    # a choice made for another checkpoint is not applied
    (r / "postprocessing.json").write_text(json.dumps(dict(rec, iteration=rec["iteration"] + 1)))
    assert load_run(r).settings == {}
    predict_folder([str(r)], d, tmp_path / "other", progress=False)
    assert same("other", "forcedFalse")
