"""Image IO keeps geometry, catches truncation and NaN, and writes atomically."""
import os

import numpy as np
import pytest
from conftest import geom

from semiseg.data import io as sio
from semiseg.data.io import Geometry, read_image, write_image
from semiseg.utils import SemisegError, atomic_path


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry(tmp_path, ending):
    a = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    d = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    g = geom(a.shape, (0.7, 0.8, 3.0), (1.5, -2.0, 30.0), d)
    p = tmp_path / f"x{ending}"
    write_image(a, g, p)
    b, g2 = read_image(p)
    np.testing.assert_allclose(a, b)
    assert not g.mismatch(g2), g.mismatch(g2)
    assert g2.spacing_zyx == pytest.approx((3.0, 0.8, 0.7))
    assert g2.shape_zyx == a.shape


def test_truncated_nifti_gz_is_an_error(tmp_path):
    p = tmp_path / "x.nii.gz"
    write_image(np.ones((20, 20, 20), np.float32), geom((20, 20, 20)), p)
    p.write_bytes(p.read_bytes()[:-200])
    with pytest.raises(SemisegError, match="truncated"):
        read_image(p)


def test_nan_in_nifti_is_seen(tmp_path):
    a = np.ones((4, 5, 6), np.float32)
    a[1, 2, 3] = np.nan
    p = tmp_path / "x.nii.gz"
    write_image(a, geom(a.shape), p)
    b, _ = read_image(p)
    assert np.isnan(b).sum() == 1  # SimpleITK alone would have returned 0 here
    with pytest.raises(SemisegError, match="NaN"):
        read_image(p, require_finite=True)


def test_crash_during_write_leaves_nothing(tmp_path, monkeypatch):
    import SimpleITK as sitk

    p = tmp_path / "out.nii.gz"

    def boom(img, path, *a):
        open(path, "wb").write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(SemisegError, match="out.nii.gz: cannot write the image"):
        write_image(np.zeros((2, 2, 2), np.uint8), geom((2, 2, 2)), p)
    assert list(tmp_path.iterdir()) == []

    # a writer that reports success on a file cut short (ITK's, when a file-size limit is hit): refused
    monkeypatch.undo()

    def short(img, path, *a):
        real_write(img, path, *a)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) - 10])

    real_write = sitk.WriteImage
    monkeypatch.setattr(sitk, "WriteImage", short)
    for name in ("cut.nii.gz", "cut.nii", "cut.nrrd"):
        with pytest.raises(SemisegError, match="incomplete"):
            write_image(np.arange(512, dtype=np.int16).reshape(8, 8, 8), geom((8, 8, 8)), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_only_on_success(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(p) as t:
            t.write_text("half")
            raise KeyboardInterrupt
    assert p.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """kill -9 between writing and renaming leaves ``.NAME.<host>-<pid>-<hex>.tmp``: the next write of
    that file removes it when the pid no longer runs; a live process's temporary is left alone."""
    import subprocess
    import sys

    from semiseg.utils import _HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    p = tmp_path / "progress.png"
    stale = tmp_path / f".progress.png.{_HOST}-{dead.pid}-0badc0de.tmp.png"
    live = tmp_path / f".progress.png.{_HOST}-{os.getppid()}-0000beef.tmp.png"
    other_host = tmp_path / f".progress.png.elsewhere-{dead.pid}-0000cafe.tmp.png"
    other_file = tmp_path / f".metrics.csv.{_HOST}-{dead.pid}-00000001.tmp.csv"
    for f in (stale, live, other_host, other_file):
        f.write_bytes(b"half")
    with atomic_path(p) as t:
        t.write_bytes(b"whole")
    assert p.read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and other_host.exists() and other_file.exists()


def test_geometry_mismatch_tolerance():
    g = Geometry((1.0, 1.0, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (4, 4, 4))
    assert not g.mismatch(Geometry((1.00001, 1.0, 2.0), (1e-5, 0, 0), g.direction, g.size))
    assert g.mismatch(Geometry((1.1, 1.0, 2.0), g.origin, g.direction, g.size))
    assert "origin" in g.mismatch(Geometry(g.spacing, (0.5, 0, 0), g.direction, g.size))[0]
    assert "size" in g.mismatch(Geometry(g.spacing, g.origin, g.direction, (4, 4, 5)))[0]


def test_missing_file(tmp_path):
    with pytest.raises(SemisegError, match="not found"):
        sio.read_image(tmp_path / "nope.nii.gz")
