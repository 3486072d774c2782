"""`semiseg check` on the real datasets in ../shared/data (skipped when absent)."""
import pytest
from conftest import SHARED_DATA

from semiseg.data.checking import check_dataset

DATASETS = ["LA", "ACDC", "BraTS-mini", "CHAOS-MR"]


@pytest.mark.parametrize("name", DATASETS)
def test_real_dataset_passes_check(name):
    root = SHARED_DATA / name
    if not (root / "dataset.json").exists():
        pytest.skip(f"{root} not available")
    rep = check_dataset(root, progress=False)
    assert rep.ok, [str(p) for p in rep.errors[:5]]
