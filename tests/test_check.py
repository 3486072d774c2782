"""`semiseg check`: a sound dataset passes; each kind of breakage is an error naming the file."""
import gzip
import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import geom, make_dataset

from semiseg.cli import main
from semiseg.data.checking import check_dataset
from semiseg.data.io import read_image, write_image


def _rewrite(path, fn):
    arr, g = read_image(path)
    arr, g = fn(arr, g)
    write_image(arr, g, path)


def _set_meta(root, **kw):
    p = root / "dataset.json"
    m = json.loads(p.read_text())
    for k, v in kw.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    p.write_text(json.dumps(m))


def _img(root, i=0, c=0):
    return root / "imagesTr" / f"CASE_{i:03d}_{c:04d}.nii.gz"


def _lab(root, i=0):
    return root / "labelsTr" / f"CASE_{i:03d}.nii.gz"


def br_missing_key(r):
    _set_meta(r, labels=None)
    return r / "dataset.json", "dataset_json"


def br_bad_json(r):
    (r / "dataset.json").write_text("{not json")
    return r / "dataset.json", "dataset_json"


def br_missing_channel(r):
    _set_meta(r, channel_names={"0": "MRI", "1": "T2"})
    return r / "imagesTr" / "CASE_000_0001.nii.gz", "missing_channel"


def br_extra_channel(r):
    arr, g = read_image(_img(r))
    write_image(arr, g, r / "imagesTr" / "CASE_000_0003.nii.gz")
    return r / "imagesTr" / "CASE_000_0003.nii.gz", "extra_channel"


def br_truncated(r):
    p = _img(r, 1)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    return p, "truncated"


def br_corrupt(r):
    p = _lab(r, 1)
    p.write_bytes(gzip.compress(b"this is not a NIfTI file at all" * 20))
    return p, "unreadable"


def br_shape(r):
    _rewrite(_lab(r, 2), lambda a, g: (a[:, :, :-1].copy(), geom(a[:, :, :-1].shape, g.spacing, g.origin)))
    return _lab(r, 2), "label_geometry"


def br_spacing(r):
    _rewrite(_lab(r, 0), lambda a, g: (a, geom(a.shape, (1.0, 1.0, 2.5), g.origin)))
    return _lab(r, 0), "label_geometry"


def br_origin(r):
    _rewrite(_lab(r, 0), lambda a, g: (a, geom(a.shape, g.spacing, (g.origin[0] + 4, g.origin[1], g.origin[2]))))
    return _lab(r, 0), "label_geometry"


def br_direction(r):
    _rewrite(_lab(r, 0), lambda a, g: (a, geom(a.shape, g.spacing, g.origin, (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))))
    return _lab(r, 0), "label_geometry"


def br_channels_disagree(r):
    _set_meta(r, channel_names={"0": "MRI", "1": "T2"})
    for i in range(4):
        arr, g = read_image(_img(r, i))
        g2 = geom(arr.shape, (1.0, 1.0, 3.0), g.origin) if i == 1 else g
        write_image(arr, g2, _img(r, i, 1))
    return _img(r, 1, 1), "channel_geometry"


def br_nan(r):
    _rewrite(_img(r, 2), lambda a, g: (np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a).astype(np.float32), g))
    return _img(r, 2), "non_finite"


def br_inf_nrrd(r):
    """NaN/Inf in another format (NRRD) are caught too."""
    _set_meta(r, file_ending=".nrrd")
    for f in list((r / "imagesTr").iterdir()) + list((r / "labelsTr").iterdir()):
        a, g = read_image(f)
        if f.parent.name == "imagesTr" and f.name.startswith("CASE_001"):
            a = a.copy()
            a[0, 0, 0] = np.inf
        write_image(a, g, f.with_name(f.name.replace(".nii.gz", ".nrrd")))
        f.unlink()
    return r / "imagesTr" / "CASE_001_0000.nrrd", "non_finite"


def br_undeclared(r):
    _rewrite(_lab(r, 1), lambda a, g: (np.where(a == 2, 7, a).astype(np.uint8), g))
    return _lab(r, 1), "undeclared_label"


def br_non_integer(r):
    _rewrite(_lab(r, 1), lambda a, g: ((a.astype(np.float32) * 0.5), g))
    return _lab(r, 1), "non_integer_label"


def br_2d(r):
    p = _img(r, 3)
    a, g = read_image(p)
    img = sitk.GetImageFromArray(a[3])
    sitk.WriteImage(img, str(p))
    return p, "dimension"


def br_4d(r):
    p = _img(r, 3)
    a, _ = read_image(p)
    img = sitk.GetImageFromArray(np.stack([a, a]).astype(np.float32), isVector=False)
    sitk.WriteImage(img, str(p))
    return p, "dimension"


def br_escape(r):
    s = json.loads((r / "splits.json").read_text())
    s[0]["train"].append("../../etc/passwd")
    (r / "splits.json").write_text(json.dumps(s))
    return r / "splits.json", "unsafe_case_id"


def br_duplicate(r):
    s = json.loads((r / "splits.json").read_text())
    s[0]["val"].append(s[0]["train"][0])
    (r / "splits.json").write_text(json.dumps(s))
    return r / "splits.json", "duplicate_case"


def br_case_collision(r):
    a, g = read_image(_img(r, 0))
    write_image(a, g, r / "imagesTr" / "case_000_0000.nii.gz")
    return r / "imagesTr", "duplicate_case"


def br_orphan_label(r):
    a, g = read_image(_lab(r, 0))
    write_image(a, g, r / "labelsTr" / "GHOST_007.nii.gz")
    return r / "labelsTr" / "GHOST_007.nii.gz", "orphan_label"


def br_wrong_ending(r):
    a, g = read_image(_img(r, 0))
    write_image(a, g, r / "imagesTr" / "CASE_009_0000.mha")
    return r / "imagesTr" / "CASE_009_0000.mha", "extra_file"


def br_regions_without_order(r):
    _set_meta(r, labels={"background": 0, "whole": [1, 2], "core": [2]})
    return r / "dataset.json", "dataset_json"


BREAKERS = [br_missing_key, br_bad_json, br_missing_channel, br_extra_channel, br_truncated, br_corrupt,
            br_shape, br_spacing, br_origin, br_direction, br_channels_disagree, br_nan, br_inf_nrrd,
            br_undeclared, br_non_integer, br_2d, br_4d, br_escape, br_duplicate, br_case_collision,
            br_orphan_label, br_wrong_ending, br_regions_without_order]


def test_sound_dataset_passes(tiny, capsys):
    rep = check_dataset(tiny, workers=1, progress=False)
    assert rep.ok, [str(p) for p in rep.problems]
    assert rep.n_cases == 4 and rep.n_labeled == 4
    assert main(["check", str(tiny), "-q"]) == 0


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__[3:])
def test_broken_dataset_is_rejected(tmp_path, breaker, capsys):
    root = make_dataset(tmp_path / "Tiny")
    path, kind = breaker(root)
    rep = check_dataset(root, workers=1, progress=False)
    assert not rep.ok
    hits = [p for p in rep.errors if p.kind == kind]
    assert hits, f"expected a {kind} error, got {[str(p) for p in rep.problems]}"
    assert any(str(path) in p.path or str(path) in p.message for p in hits), [str(p) for p in hits]
    assert main(["check", str(root), "-q"]) == 1
    out = capsys.readouterr().out
    assert str(path) in out


def test_all_background_label_is_a_warning(tiny):
    _rewrite(_lab(tiny, 1), lambda a, g: (np.zeros_like(a), g))
    rep = check_dataset(tiny, workers=1, progress=False)
    assert rep.ok
    assert [p.kind for p in rep.warnings] == ["empty_label"]
    assert str(_lab(tiny, 1)) == rep.warnings[0].path


def test_check_uses_worker_processes(tiny):
    rep = check_dataset(tiny, workers=2, progress=False)
    assert rep.ok


def test_missing_dataset_folder(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope"), "-q"]) == 1
    assert "dataset folder not found" in capsys.readouterr().out


def test_multichannel_nrrd_and_mha(tmp_path):
    for ending in (".nrrd", ".mha"):
        root = make_dataset(tmp_path / ending[1:], channels=2, ending=ending)
        rep = check_dataset(root, workers=1, progress=False)
        assert rep.ok, [str(p) for p in rep.problems]


def _del(p):
    p.unlink()


RULE_CASES = {  # nnU-Net v2 verify_dataset_integrity rule -> a dataset that breaks it
    "dataset_json": lambda r: _del(r / "dataset.json"),
    "folders": lambda r: [_del(p) for p in (r / "imagesTr").iterdir()] and (r / "imagesTr").rmdir(),
    "required_keys": br_missing_key,
    "num_training": lambda r: _set_meta(r, numTraining=9),
    "label_per_case": lambda r: _del(_lab(r, 3)),
    "consecutive_labels": lambda r: _set_meta(r, labels={"background": 0, "a": 1, "b": 2, "c": 4}),
    "expected_labels": br_undeclared,
    "no_nan": br_nan,
    "channels": br_missing_channel,
    "shape": br_shape,
    "spacing": br_spacing,
    "origin_direction": br_direction,
    "background_only": lambda r: _rewrite(_lab(r, 1), lambda a, g: (np.zeros_like(a), g)),
}


@pytest.mark.parametrize("rule", sorted(RULE_CASES))
def test_findings_name_the_nnunet_rule_they_break(tmp_path, rule, capsys):
    from semiseg.data.checking import NNUNET_RULES

    assert set(RULE_CASES) == set(NNUNET_RULES)  # every rule of nnU-Net's check is covered
    root = make_dataset(tmp_path / "Tiny")
    RULE_CASES[rule](root)
    rep = check_dataset(root, workers=1, progress=False)
    assert any(p.rule == rule for p in rep.problems), [str(p) for p in rep.problems]
    main(["check", str(root), "-q"])
    assert f"[nnU-Net rule: {NNUNET_RULES[rule]}]" in capsys.readouterr().out
