"""Preprocessing: exact geometry round trip, resumability, atomicity, unlabeled labels unopened."""
import json

import numpy as np
import pytest
from conftest import make_dataset

from semiseg.data import io as sio
from semiseg.planning import load_split, plan
from semiseg.preprocessing import cache as pp
from semiseg.preprocessing import load_case, preprocess, resampling, restore_label
from semiseg.preprocessing.resampling import resample_label


def _dice(a, b, c):
    a, b = a == c, b == c
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_round_trip_exact_at_native_spacing(tiny, tmp_path):
    work = tmp_path / "w"
    plan(tiny, work, progress=False, workers=1)
    preprocess(work, progress=False, workers=1)
    for cid in ["CASE_000", "CASE_003"]:
        data, seg, props = load_case(work, cid)
        assert data.dtype == np.float32 and data.shape[1:] == seg.shape
        assert props["shape"] != props["original_shape"]  # the zero border was cropped
        back, g = restore_label(np.asarray(seg), props)
        orig, og = sio.read_image(tiny / "labelsTr" / f"{cid}.nii.gz")
        assert back.shape == orig.shape
        assert not og.mismatch(g, 1e-9)
        np.testing.assert_array_equal(back, orig)
        # written to disk and read again: same geometry, same voxels
        sio.write_image(back, g, tmp_path / f"{cid}.nii.gz")
        again, g2 = sio.read_image(tmp_path / f"{cid}.nii.gz")
        assert g2.spacing == og.spacing and g2.origin == og.origin and g2.direction == og.direction
        np.testing.assert_array_equal(again, orig)


def test_round_trip_with_resampling(tmp_path):
    root = make_dataset(tmp_path / "D", shape=(12, 24, 28))
    work = tmp_path / "w"
    plan(root, work, progress=False, workers=1)
    p = json.loads((work / "plans.json").read_text())
    p["target_spacing"] = [1.5, 0.75, 1.25]  # force a real resampling
    (work / "plans.json").write_text(json.dumps(p))
    preprocess(work, progress=False, workers=1)
    data, seg, props = load_case(work, "CASE_000")
    assert props["spacing"] == [1.5, 0.75, 1.25]
    back, g = restore_label(np.asarray(seg), props)
    orig, og = sio.read_image(root / "labelsTr" / "CASE_000.nii.gz")
    assert back.shape == orig.shape and not og.mismatch(g, 1e-9)
    for c in (1, 2):
        assert _dice(back, orig, c) > 0.8


def test_resample_label_keeps_small_classes():
    seg = np.zeros((20, 20, 20), np.uint8)
    seg[5:15, 5:15, 5:15] = 1
    seg[9:11, 9:11, 9:11] = 2
    out = resample_label(seg, (30, 30, 30), [1, 1, 1], [2 / 3] * 3)
    assert set(np.unique(out)) == {0, 1, 2}


def test_anisotropic_resampling_uses_separate_z():
    data = np.random.default_rng(0).normal(size=(1, 6, 32, 32)).astype(np.float32)
    out = resampling.resample_image(data, (6, 16, 16), [5.0, 1, 1], [5.0, 2, 2])
    assert out.shape == (1, 6, 16, 16)
    out = resampling.resample_image(data, (12, 32, 32), [5.0, 1, 1], [2.5, 1, 1])
    np.testing.assert_array_equal(out[0, 0], data[0, 0])  # nearest along z: slices are copied


def test_resume_skips_done_and_crash_leaves_no_case(tiny, tmp_path, monkeypatch):
    work = tmp_path / "w"
    plan(tiny, work, progress=False, workers=1)
    calls = {"n": 0}
    real = pp.save_npy

    def flaky(arr, path):
        calls["n"] += 1
        if calls["n"] == 4:  # die while writing the second case
            raise KeyboardInterrupt
        real(arr, path)

    monkeypatch.setattr(pp, "save_npy", flaky)
    with pytest.raises(KeyboardInterrupt):
        preprocess(work, progress=False, workers=1)
    monkeypatch.setattr(pp, "save_npy", real)
    done = sorted(p.name for p in (work / "preprocessed").glob("*.json"))
    assert done == ["CASE_000.json"]  # the interrupted case has no properties: not complete
    assert not list((work / "preprocessed").glob(".*tmp*"))
    c = preprocess(work, progress=False, workers=1)
    assert c == {"done": 3, "skipped": 1}
    summary = (work / "preprocessed" / "summary.json").read_text()
    assert preprocess(work, progress=False, workers=2) == {"done": 0, "skipped": 4}
    # the summary describes the cache, not the call: a resumed fill equals an uninterrupted one
    assert (work / "preprocessed" / "summary.json").read_text() == summary
    assert json.loads(summary)["cases"] == 4


def test_unlabeled_labels_are_never_opened(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "D", n=6)  # every case has a label file on disk
    opened = []
    real = sio.read_image

    def spy(path, *a, **k):
        opened.append(str(path))
        return real(path, *a, **k)

    import semiseg.data.dataset as sds
    monkeypatch.setattr(sds, "read_image", spy)  # every case read (plan and preprocess) goes through it
    work = tmp_path / "w"
    plan(root, work, labeled=2, progress=False, workers=1)
    unl = load_split(work).unlabeled
    assert unl == ["CASE_002", "CASE_003", "CASE_004"]
    preprocess(work, progress=False, workers=1)
    for cid in unl:
        assert not any(o.endswith(f"labelsTr/{cid}.nii.gz") for o in opened)
        assert any(o.endswith(f"imagesTr/{cid}_0000.nii.gz") for o in opened)
        assert not (work / "preprocessed" / f"{cid}_seg.npy").exists()
        assert (work / "preprocessed" / f"{cid}.npy").exists()


def test_multichannel_with_mask_normalisation(tmp_path):
    root = make_dataset(tmp_path / "D", channels=2)
    work = tmp_path / "w"
    p = plan(root, work, progress=False, workers=1)
    p["normalization"][0]["use_mask"] = True
    (work / "plans.json").write_text(json.dumps(p))
    preprocess(work, progress=False, workers=1)
    data, seg, props = load_case(work, "CASE_001")
    assert data.shape[0] == 2
    assert abs(float(np.mean(data[1]))) < 1e-3  # plain z-score
    locs = np.load(work / "preprocessed" / "CASE_001_locs.npy")
    assert set(locs[:, 0]) <= {1, 2} and (seg[tuple(locs[:, 1:].T)] == locs[:, 0]).all()


def test_replanning_with_fewer_labels_drops_stale_label_cache(tiny, tmp_path):
    work = tmp_path / "w"
    plan(tiny, work, progress=False, workers=1)
    preprocess(work, progress=False, workers=1)
    assert (work / "preprocessed" / "CASE_002_seg.npy").exists()
    plan(tiny, work, labeled=1, progress=False, workers=1)
    assert preprocess(work, progress=False, workers=1) == {"done": 2, "skipped": 2}
    assert not (work / "preprocessed" / "CASE_002_seg.npy").exists()
    assert load_case(work, "CASE_002")[1] is None
