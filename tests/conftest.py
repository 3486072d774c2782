"""Small synthetic datasets in the nnU-Net v2 raw layout, made in seconds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semiseg.data.io import Geometry, write_image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def geom(shape_zyx, spacing_xyz=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=None):
    d = direction or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    return Geometry(tuple(spacing_xyz), tuple(origin), tuple(d), tuple(reversed(shape_zyx)))


def blob_case(rng, shape=(10, 16, 20), n_classes=3):
    """An image with a zero border (so cropping does something) and a label with n_classes-1 blobs."""
    img = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.uint8)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = (slice(1, shape[0] - 1), slice(2, shape[1] - 2), slice(2, shape[2] - 2))
    img[body] = 50 + rng.normal(0, 5, img[body].shape)
    for c in range(1, n_classes):
        cz, cy, cx = [rng.integers(s // 3, 2 * s // 3) for s in shape]
        r = 2 + c
        m = ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r)
        m &= img > 0
        lab[m] = c
        img[m] = 100 + 40 * c + rng.normal(0, 5, int(m.sum()))
    return img, lab


def make_dataset(root: Path, n: int = 4, shape=(10, 16, 20), spacing_xyz=(1.0, 1.0, 2.0), channels: int = 1,
                 n_labeled: int | None = None, ending: str = ".nii.gz", splits: bool = True, seed: int = 0,
                 channel_name: str = "MRI", n_val: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    ids = []
    n_labeled = n if n_labeled is None else n_labeled
    for i in range(n):
        cid = f"CASE_{i:03d}"
        ids.append(cid)
        img, lab = blob_case(rng, shape)
        g = geom(shape, spacing_xyz, origin=(10.0 * i, -5.0, 3.0))
        for c in range(channels):
            write_image(img * (1 + c), g, root / "imagesTr" / f"{cid}_{c:04d}{ending}")
        if i < n_labeled:
            write_image(lab, g, root / "labelsTr" / f"{cid}{ending}")
    meta = {"channel_names": {str(c): channel_name for c in range(channels)},
            "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": n, "file_ending": ending,
            "name": "Tiny"}
    (root / "dataset.json").write_text(json.dumps(meta))
    if splits:
        val = ids[:n_labeled][-n_val:] if n_val else []
        train = [c for c in ids if c not in val]
        (root / "splits.json").write_text(json.dumps([{"train": train, "val": val}]))
    return root


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_dataset(tmp_path / "Tiny")


@pytest.fixture
def tiny_work(tmp_path) -> Path:
    """A planned and preprocessed 6-case dataset (5 labeled, 1 validation), 12x24x24 voxels."""
    from semiseg.planning import plan
    from semiseg.preprocessing import preprocess

    ds = make_dataset(tmp_path / "T", n=6, shape=(12, 24, 24))
    plan(ds, tmp_path / "work", progress=False, workers=1)
    preprocess(tmp_path / "work", workers=1, progress=False)
    return tmp_path / "work"


def open_chromium(width: int = 1200, height: int = 900, webgl: bool = False):
    """Debian's headless Chromium through its chromedriver (the README's test command installs both);
    ``webgl``: software WebGL2 (SwiftShader), which Chromium 139+ only offers with
    --enable-unsafe-swiftshader."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_bin, "Debian's chromium and chromium-driver are needed (the README's test command " \
                                    "installs them)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    gpu = ("--enable-unsafe-swiftshader", "--use-angle=swiftshader") if webgl else ("--disable-gpu",)
    for a in ("--headless=new", "--no-sandbox", f"--window-size={width},{height}", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", *gpu):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver_bin), options=opts)


def train_config(**kw):
    """A fast configuration for tests: tiny network, fp32, no loader process."""
    from semiseg.training import TrainConfig

    base = dict(iterations=4, network_options={"base_features": 4}, amp="off", workers=0, val_every=100,
                log_every=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def run(tiny_work, tmp_path):
    """A tiny trained segmentation run (3 iterations, supervised, 3D) on ``tiny_work``."""
    from semiseg.training import train

    r = tmp_path / "run"
    train(tiny_work, r, train_config(iterations=3), progress=False)
    return r


@pytest.fixture
def stcn_run(tiny_work, tmp_path):
    """A tiny trained propagation run (`semiseg train --method stcn --config 2d`) on ``tiny_work``."""
    from semiseg.training import TrainConfig, train

    cfg = TrainConfig(configuration="2d", method="stcn", iterations=6, val_every=3, workers=0,
                      method_options={"crop": 16, "val_slices": 2}, network_options={"width": 8})
    s = train(tiny_work, tmp_path / "stcn", cfg, progress=False)
    assert s["iterations"] == 6 and s["best_iteration"] in (3, 6)
    return tmp_path / "stcn"
