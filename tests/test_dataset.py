"""Reading datasets and deciding labeled / unlabeled / validation cases."""
import json

import pytest
from conftest import make_dataset

from semiseg.data.checking import load_dataset
from semiseg.data.dataset import read_case_list
from semiseg.utils import SemisegError


def test_labeled_n_follows_split_order(tmp_path):
    root = make_dataset(tmp_path / "D", n=6)
    s = json.loads((root / "splits.json").read_text())
    s[0]["train"] = list(reversed(s[0]["train"]))  # the split's order, not sorted order, decides
    (root / "splits.json").write_text(json.dumps(s))
    ds = load_dataset(root)
    sp = ds.split(labeled=2)
    assert sp.labeled == s[0]["train"][:2]
    assert sp.unlabeled == s[0]["train"][2:]
    assert sp.val == s[0]["val"]


def test_default_is_every_case_with_a_label(tmp_path):
    root = make_dataset(tmp_path / "D", n=6, n_labeled=4, n_val=1)
    sp = load_dataset(root).split()
    assert sp.labeled == ["CASE_000", "CASE_001", "CASE_002"]
    assert sp.unlabeled == ["CASE_004", "CASE_005"]  # no label files
    assert sp.val == ["CASE_003"]


def test_labeled_list_formats(tmp_path):
    root = make_dataset(tmp_path / "D", n=6)
    ds = load_dataset(root)
    (tmp_path / "l.txt").write_text("# mine\nCASE_002\nCASE_000\n")
    assert ds.split(labeled_list=tmp_path / "l.txt").labeled == ["CASE_002", "CASE_000"]
    (tmp_path / "l.json").write_text(json.dumps({"labeled_1 (x%)": ["CASE_001"], "labeled_2": ["CASE_001", "CASE_002"]}))
    assert ds.split(labeled_list=tmp_path / "l.json", labeled_key="labeled_1").labeled == ["CASE_001"]
    with pytest.raises(SemisegError, match="labeled-key"):
        ds.split(labeled_list=tmp_path / "l.json")
    (tmp_path / "bad.txt").write_text("CASE_005\n")  # the validation case
    with pytest.raises(SemisegError, match="validation"):
        ds.split(labeled_list=tmp_path / "bad.txt")
    (tmp_path / "esc.txt").write_text("../CASE_000\n")
    with pytest.raises(SemisegError, match="escape"):
        ds.split(labeled_list=tmp_path / "esc.txt")


def test_too_many_labeled(tiny):
    with pytest.raises(SemisegError, match="--labeled 9"):
        load_dataset(tiny).split(labeled=9)


def test_without_splits_json_validation_is_seeded(tmp_path):
    root = make_dataset(tmp_path / "D", n=10, splits=False)
    a, b = load_dataset(root).split(), load_dataset(root).split()
    assert a.val == b.val and len(a.val) == 2
    assert not set(a.val) & set(a.labeled)


def test_regions_and_classes(tmp_path):
    root = make_dataset(tmp_path / "D")
    m = json.loads((root / "dataset.json").read_text())
    m["labels"] = {"background": 0, "whole": [1, 2], "core": [2]}
    m["regions_class_order"] = [1, 2]
    (root / "dataset.json").write_text(json.dumps(m))
    ds = load_dataset(root)
    assert ds.has_regions and ds.regions() == {"whole": [1, 2], "core": [2]}
    assert ds.num_classes == 3


def test_load_raises_on_structural_error(tmp_path):
    root = make_dataset(tmp_path / "D", channels=2)
    (root / "imagesTr" / "CASE_000_0001.nii.gz").unlink()
    with pytest.raises(SemisegError, match="missing channel 1 of case CASE_000"):
        load_dataset(root)


def test_read_case_list_rejects_duplicates(tmp_path):
    (tmp_path / "l.txt").write_text("A\nA\n")
    with pytest.raises(SemisegError, match="twice"):
        read_case_list(tmp_path / "l.txt")


def test_read_label_file_checks_values_and_geometry(tmp_path):
    import numpy as np

    from semiseg.data.dataset import read_label_file
    from semiseg.data.io import Geometry, write_image

    g = Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    lab = np.zeros((3, 4, 5), np.int16)
    lab[1, 1:3, 1:4] = 7
    write_image(lab, g, tmp_path / "ok.nii.gz")
    assert np.array_equal(read_label_file(tmp_path / "ok.nii.gz", g), lab)  # any class without `declared`
    with pytest.raises(SemisegError, match=r"ok.nii.gz: label values \[7\] are not declared"):
        read_label_file(tmp_path / "ok.nii.gz", g, declared=[0, 1])
    write_image(-lab, g, tmp_path / "neg.nii.gz")
    with pytest.raises(SemisegError, match=r"neg.nii.gz: negative label values"):
        read_label_file(tmp_path / "neg.nii.gz", g)
    write_image(lab.astype(np.float32) / 2, g, tmp_path / "frac.nii.gz")
    with pytest.raises(SemisegError, match=r"frac.nii.gz: .*non-integer"):
        read_label_file(tmp_path / "frac.nii.gz", g)
    with pytest.raises(SemisegError, match=r"ok.nii.gz: label geometry differs"):
        read_label_file(tmp_path / "ok.nii.gz", Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
