"""Batches are a function of (seed, iteration): resumable, and shardable over DDP ranks."""
import json

import numpy as np
import torch

from semiseg.training.augmentation import AugmentConfig
from semiseg.training.sampling import PatchBatches, batch_loader


def _ds(work, **kw):
    plans = json.loads((work / "plans.json").read_text())
    split = json.loads((work / "split.json").read_text())
    cfg = plans["configurations"][kw.pop("config", "3d")]
    return PatchBatches(work, split["labeled"], cfg, plans["target_spacing"], kw.pop("batch", 4), seed=3,
                        aug=AugmentConfig(), **kw)


def test_batches_are_deterministic_and_sharded(tiny_work):
    ds = _ds(tiny_work)
    b1, b2 = ds[7], ds[7]
    assert torch.equal(b1["image"], b2["image"]) and torch.equal(b1["label"], b2["label"])
    assert not torch.equal(ds[8]["image"], b1["image"])
    r0, r1 = _ds(tiny_work, rank=0, world=2)[7], _ds(tiny_work, rank=1, world=2)[7]
    assert torch.equal(torch.cat([r0["image"], r1["image"]]), b1["image"])
    # a loader with a worker process yields the same stream
    it = batch_loader(ds, 5, workers=1)
    assert torch.equal(next(it)["image"], ds[5]["image"])
    assert torch.equal(next(it)["image"], ds[6]["image"])


def test_foreground_oversampling(tiny_work):
    # patches much smaller than the cases, so a patch placed at random often misses the small blobs
    def hits(p_fg, j):
        ds = _ds(tiny_work, batch=3, fg_oversample=p_fg, patch_size=[2, 4, 4])
        return [bool((ds[i]["label"][j] > 0).any()) for i in range(40)]

    # the last round(3 * 0.34) = 1 sample of every batch is centred on foreground: it always holds some
    assert all(hits(0.34, 2))
    # without oversampling the same sample slot is placed uniformly and misses foreground often
    assert sum(hits(0.0, 2)) < 30


def test_2d_batches(tiny_work):
    ds = _ds(tiny_work, config="2d")
    b = ds[0]
    assert b["image"].shape[2:] == b["label"].shape[1:] and b["image"].dim() == 4


def test_unlabeled_share(tiny_work):
    split = json.loads((tiny_work / "split.json").read_text())
    plans = json.loads((tiny_work / "plans.json").read_text())
    ds = PatchBatches(tiny_work, split["labeled"][:2], plans["configurations"]["3d"], plans["target_spacing"], 2, 0,
                      AugmentConfig(), unlabeled=split["labeled"][2:], unlabeled_batch=2)
    b = ds[0]
    assert b["image_u"].shape == b["image"].shape
    assert np.isfinite(b["image_u"].numpy()).all()


def test_pseudo_labeled_share(tiny_work):
    """Patches of pseudo-labeled scans are flagged, and pseudo_share sets how many of them a batch holds."""
    split = json.loads((tiny_work / "split.json").read_text())
    pseudo = split["labeled"][2:]
    dirs = {c: tiny_work / "preprocessed" for c in pseudo}  # any folder holding their _seg.npy

    def flags(share):
        ds = _ds(tiny_work, batch=4, label_dirs=dirs, pseudo_share=share)
        return torch.cat([ds[i]["pseudo"] for i in range(30)]).float().mean().item()

    assert flags(1.0) == 1.0 and flags(0.0) == 0.0
    assert 0.3 < flags(0.5) < 0.7
    assert "pseudo" not in _ds(tiny_work)[0]  # no pseudo-labels, no flag
