"""semiseg pseudolabel: consensus scores against hand-computed values, and a whole folder from a CPS
run (geometry, scores.csv, resume, shards merging into one table)."""
import csv
import json

import numpy as np
import pytest
import torch
from conftest import train_config

from semiseg.planning.spacing import lowest_resolution_axis
from semiseg.pseudolabels.pseudolabel import consensus_scores, mean_entropy, pseudolabel_folder
from semiseg.pseudolabels.selection import read_scores
from semiseg.utils import SemisegError


def test_consensus_matches_hand_computation():
    avg = np.zeros((2, 2, 4), np.uint8)
    avg[0, 0, :2] = 1          # slice 0 has 2 voxels of class 1; slice 1 is empty
    same = avg.copy()
    other = avg.copy()
    other[0, 0, 1] = 0          # one voxel fewer: slice DSC 2*1/(1+2) = 2/3
    s = consensus_scores([same, other], avg, 2, slice_axis=0, class_names=["a"])
    # eq. 2: mean over non-empty slices and members = (1 + 2/3) / 2; slice 1 is empty in every map
    assert s["consensus"] == pytest.approx((1 + 2 / 3) / 2)
    assert s["consensus_3d"] == pytest.approx((1 + 2 / 3) / 2) and s["consensus_3d_a"] == s["consensus_3d"]
    empty = np.zeros_like(avg)
    assert consensus_scores([empty, empty], empty, 2)["consensus"] == 1.0


def test_entropy_and_slice_axis():
    probs = torch.tensor([[0.5, 1.0], [0.5, 0.0]]).reshape(2, 1, 1, 2)
    labels = [np.array([[[1, 0]]], np.uint8)]
    assert mean_entropy(probs, labels) == pytest.approx(np.log(2), rel=1e-4)
    assert mean_entropy(probs, [np.zeros((1, 1, 2), np.uint8)]) == 0.0
    assert lowest_resolution_axis([9.5, 1.5, 1.5]) == 0 and lowest_resolution_axis([1, 3, 1]) == 1


def test_pseudolabel_folder_from_a_cps_run(tiny_work, tmp_path):
    from semiseg.data.io import read_image
    from semiseg.training import train

    split = json.loads((tiny_work / "split.json").read_text())
    run = tmp_path / "cps"
    train(tiny_work, run, train_config(method="cps", labeled=split["labeled"][:2], iterations=2), progress=False)
    raw = json.loads((tiny_work / "plans.json").read_text())["dataset_path"]
    out = tmp_path / "pl"
    # one member: the pseudo-labels and the entropy, no consensus (nothing to agree with)
    one = pseudolabel_folder([str(run)], f"{raw}/imagesTr", tmp_path / "one", nets=["net1"], progress=False)
    assert one["members"] == 1 and one["done"] == 6
    rows = list(csv.DictReader(open(tmp_path / "one" / "scores.csv")))
    assert "consensus" not in rows[0] and all(float(r["entropy"]) >= 0 for r in rows)
    with pytest.raises(SemisegError, match="no score column 'consensus'"):
        read_scores(tmp_path / "one", "consensus")
    assert len(read_scores(tmp_path / "one", "entropy", skip_empty=False)) == 6
    # two shards, as two ranks would run them; the last to finish leaves the whole table
    a = pseudolabel_folder([str(run)], f"{raw}/imagesTr", out, num_parts=2, part_id=0, progress=False)
    # the first part alone leaves no table: a scores.csv of half the scans would be taken as all of them
    assert a["scores"] is None and not (out / "scores.csv").exists()
    b = pseudolabel_folder([str(run)], f"{raw}/imagesTr", out, num_parts=2, part_id=1, progress=False)
    assert b["scores"] == str(out / "scores.csv")
    assert a["done"] + b["done"] == 6 and a["members"] == 2
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 6 and all(0 <= float(r["consensus"]) <= 1 for r in rows)
    assert {"consensus_3d", "consensus_3d_a", "consensus_3d_b", "entropy"} <= set(rows[0])
    img, g = read_image(f"{raw}/imagesTr/CASE_000_0000.nii.gz")
    lab, gl = read_image(out / "CASE_000.nii.gz")
    assert lab.shape == img.shape and gl.spacing == g.spacing and gl.origin == g.origin
    again = pseudolabel_folder([str(run)], f"{raw}/imagesTr", out, progress=False)  # resumable: nothing to do
    assert again["done"] == 0 and again["skipped"] == 6
    with pytest.raises(SemisegError, match="input folder"):
        pseudolabel_folder([str(run)], f"{raw}/imagesTr", f"{raw}/imagesTr", progress=False)
    # one unreadable scan among good ones: the others are done and scored, the bad one named at the end
    import shutil

    bad_in = tmp_path / "in"
    shutil.copytree(f"{raw}/imagesTr", bad_in)
    (bad_in / "CASE_002_0000.nii.gz").write_bytes(b"not an image")
    out2 = tmp_path / "pl2"
    with pytest.raises(SemisegError, match=r"1 case\(s\) failed.*\n.*CASE_002_0000"):
        pseudolabel_folder([str(run)], bad_in, out2, progress=False)
    rows = list(csv.DictReader(open(out2 / "scores.csv")))
    assert len(rows) == 5 and "CASE_002" not in {r["case"] for r in rows}
    assert not (out2 / "CASE_002.nii.gz").exists()
    # sharded: the bad scan's part records it, so the other part (finishing last) writes the table
    out3 = tmp_path / "pl3"
    bad_part = sorted(p.name[:8] for p in bad_in.iterdir()).index("CASE_002") % 2
    with pytest.raises(SemisegError, match="written by the last part"):
        pseudolabel_folder([str(run)], bad_in, out3, num_parts=2, part_id=bad_part, progress=False)
    assert (out3 / "scores" / "CASE_002.error").exists() and not (out3 / "scores.csv").exists()
    pseudolabel_folder([str(run)], bad_in, out3, num_parts=2, part_id=1 - bad_part, progress=False)
    assert len(list(csv.DictReader(open(out3 / "scores.csv")))) == 5
    # the scan repaired, the same command again: it is done, its record goes, the table holds all 6
    shutil.copy(f"{raw}/imagesTr/CASE_002_0000.nii.gz", bad_in / "CASE_002_0000.nii.gz")
    pseudolabel_folder([str(run)], bad_in, out3, progress=False)
    assert not (out3 / "scores" / "CASE_002.error").exists()
    assert len(list(csv.DictReader(open(out3 / "scores.csv")))) == 6


def test_pseudolabels_take_the_runs_postprocessing_choice(tiny_work, tmp_path):
    import cc3d

    from semiseg.data.io import read_image
    from semiseg.training import train

    run = tmp_path / "r"
    train(tiny_work, run, train_config(iterations=2, val_every=2), progress=False)
    best = json.loads((run / "summary.json").read_text())["best_iteration"]
    raw = json.loads((tiny_work / "plans.json").read_text())["dataset_path"]
    outs = {}
    for chosen in ([], [1, 2]):
        (run / "postprocessing.json").write_text(json.dumps({"iteration": best, "largest_component_classes": chosen}))
        outs[len(chosen)] = out = tmp_path / f"pl{len(chosen)}"
        pseudolabel_folder([f"{run}@best", f"{run}@final"], f"{raw}/imagesTr", out, progress=False)

    def components(lab, c):
        return int(cc3d.connected_components((lab == c).astype(np.uint8), connectivity=26).max())

    labs = {k: [read_image(f)[0] for f in sorted(v.glob("*.nii.gz"))] for k, v in outs.items()}
    assert max(components(x, c) for x in labs[0] for c in (1, 2)) > 1  # the tiny network's maps are scattered
    assert all(components(x, c) <= 1 for x in labs[2] for c in (1, 2))
    # the scores measure the members' agreement before the postprocessing: the same both ways
    for a, b in zip(*(sorted(csv.DictReader(open(outs[k] / "scores.csv")), key=lambda r: r["case"]) for k in (0, 2))):
        assert a["consensus"] == b["consensus"]
