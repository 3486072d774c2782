"""Pseudo-label selection rules, and training on selected pseudo-labels: the cached maps equal what
`semiseg preprocess` makes of the same label, the split records the choice, bad maps are refused."""
import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import train_config

from semiseg.pseudolabels.selection import parse_select, select_cases
from semiseg.utils import SemisegError

SCORES = {"a": 0.9, "b": 0.5, "c": 0.95, "d": 0.7}


def test_select_rules():
    assert select_cases(SCORES, "threshold:0.7") == ["c", "a", "d"]
    assert select_cases(SCORES, "top:0.5") == ["c", "a"]
    assert select_cases(SCORES, "top:0.01") == ["c"]          # at least one
    assert select_cases(SCORES, "all") == ["c", "a", "d", "b"]
    assert select_cases(SCORES, "top:1", candidates=["b", "d"]) == ["d", "b"]
    # lower entropy is better
    assert select_cases(SCORES, "threshold:0.7", score="entropy") == ["b", "d"]
    assert select_cases({"x": 0.5, "y": 0.5}, "top:0.5") == ["x"]  # ties by case ID
    for bad in ("top:0", "top:1.5", "threshold", "best:3", "threshold:abc", "threshold:nan"):
        with pytest.raises(SemisegError, match="--select"):
            parse_select(bad)


def _pseudo_dir(tiny_work, tmp_path, ids, scores):
    """A pseudolabel-like folder holding the true labels of ``ids`` and a scores.csv."""
    raw = json.loads((tiny_work / "plans.json").read_text())["dataset_path"]
    pl = tmp_path / "pl"
    pl.mkdir()
    for c in ids:
        shutil.copy(f"{raw}/labelsTr/{c}.nii.gz", pl / f"{c}.nii.gz")
    with open(pl / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "members", "consensus", "entropy", "foreground_voxels"])
        for c, s in zip(ids, scores):
            w.writerow([c, 2, s, 1 - s, 100])
    return pl


def test_train_on_selected_pseudo_labels(tiny_work, tmp_path):
    from semiseg.training import train

    split = json.loads((tiny_work / "split.json").read_text())
    lab, rest = split["labeled"][:2], split["labeled"][2:]     # 3 cases become unlabeled
    pl = _pseudo_dir(tiny_work, tmp_path, rest, [0.9, 0.4, 0.8])
    run = tmp_path / "run"
    s = train(tiny_work, run, train_config(labeled=lab, pseudo_labels=str(pl), select="threshold:0.75"),
              progress=False)
    sp = json.loads((run / "split.json").read_text())
    assert sp["pseudo"] == [rest[0], rest[2]] and sp["unlabeled"] == [rest[1]]
    assert s["pseudo_labeled"] == 2 and s["labeled"] == 2
    for c in sp["pseudo"]:  # the cached pseudo-label is what preprocessing makes of that label
        got = np.load(run / "pseudo_labels" / f"{c}_seg.npy")
        want = np.load(tiny_work / "preprocessed" / f"{c}_seg.npy")
        assert np.array_equal(got, want)
        locs = np.load(run / "pseudo_labels" / f"{c}_locs.npy")
        assert len(locs) and np.all(got[tuple(locs[:, 1:].T)] == locs[:, 0])
    assert not (run / "pseudo_labels" / f"{rest[1]}_seg.npy").exists()
    # a resumed run keeps its selection even when the scores change
    (pl / "scores.csv").write_text("case,members,consensus\n" + "".join(f"{c},2,0.1\n" for c in rest))
    cfg = json.loads((run / "config.json").read_text())
    cfg["iterations"] = 6
    (run / "config.json").write_text(json.dumps(cfg))
    train(tiny_work, run, train_config(), resume=True, progress=False)
    assert json.loads((run / "split.json").read_text())["pseudo"] == sp["pseudo"]


def test_bad_pseudo_labels_are_refused(tiny_work, tmp_path):
    from semiseg.data.io import read_image, write_image
    from semiseg.training import train

    split = json.loads((tiny_work / "split.json").read_text())
    lab, rest = split["labeled"][:2], split["labeled"][2:]
    pl = _pseudo_dir(tiny_work, tmp_path, rest, [0.9, 0.8, 0.7])
    with pytest.raises(SemisegError, match="no score column"):
        train(tiny_work, tmp_path / "r0", train_config(labeled=lab, pseudo_labels=str(pl), select_score="dice"),
              progress=False)
    a, g = read_image(pl / f"{rest[0]}.nii.gz")
    a[0, 0, 0] = 7  # undeclared label value
    write_image(a, g, pl / f"{rest[0]}.nii.gz")
    with pytest.raises(SemisegError, match=rest[0]):
        train(tiny_work, tmp_path / "r1", train_config(labeled=lab, pseudo_labels=str(pl)), progress=False)
    assert not (tmp_path / "r1" / "config.json").exists()
    a[0, 0, 0] = 0
    write_image(a, dataclasses.replace(g, spacing=tuple(2 * s for s in g.spacing)), pl / f"{rest[0]}.nii.gz")
    with pytest.raises(SemisegError, match="geometry"):
        train(tiny_work, tmp_path / "r2", train_config(labeled=lab, pseudo_labels=str(pl)), progress=False)
    with pytest.raises(SemisegError, match="none of its scored scans"):
        train(tiny_work, tmp_path / "r3", train_config(pseudo_labels=str(pl)), progress=False)  # all labeled


def test_empty_pseudo_labels_are_never_selected(tmp_path):
    from semiseg.pseudolabels.selection import read_scores

    (tmp_path / "scores.csv").write_text("case,members,consensus,foreground_voxels\na,2,1.0,0\nb,2,0.8,50\n")
    assert read_scores(tmp_path) == {"b": 0.8}
    assert read_scores(tmp_path, skip_empty=False) == {"a": 1.0, "b": 0.8}
    (tmp_path / "scores.csv").write_text("case,members,consensus\na,2,oops\n")
    with pytest.raises(SemisegError, match="not a number"):
        read_scores(tmp_path)
