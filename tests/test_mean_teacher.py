"""Mean teacher with BCP's copy-paste, the copy-paste pre-training, and warm start (--init)."""
import json

import pytest
import torch
from conftest import train_config

from semiseg.cli import main
from semiseg.methods import create_method
from semiseg.methods.losses import dice_ce, partial_dice_ce
from semiseg.methods.mixing import masks, paste
from semiseg.utils import SemisegError


def test_paste_and_boxes():
    m = masks(3, (6, 9, 12), 2 / 3, iteration=5, seed=0, device="cpu")
    assert m.shape == (3, 6, 9, 12)
    assert all(int((x == 0).sum()) == 4 * 6 * 8 for x in m)  # one box of 2/3 per axis
    assert torch.equal(m, masks(3, (6, 9, 12), 2 / 3, 5, 0, "cpu"))  # a function of (seed, iteration)
    assert not torch.equal(m, masks(3, (6, 9, 12), 2 / 3, 6, 0, "cpu"))
    a, b = torch.zeros(3, 1, 6, 9, 12), torch.ones(3, 1, 6, 9, 12)
    x = paste(a, b, m)  # b inside the box, a outside
    assert torch.equal(x[:, 0], 1 - m)
    la, lb = torch.zeros(3, 6, 9, 12, dtype=torch.long), torch.full((3, 6, 9, 12), 2)
    assert torch.equal(paste(la, lb, m), (2 * (1 - m)).long())


def test_masked_loss_known_values():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 5, 6, generator=g), torch.randint(0, 3, (2, 4, 5, 6), generator=g)
    ones = torch.ones(2, 4, 5, 6)
    assert torch.allclose(partial_dice_ce(logits, target, ones), dice_ce(logits, target), atol=1e-5)
    half = ones.clone()
    half[:, :2] = 0  # the masked voxels do not count, whatever they hold
    other = target.clone()
    other[:, :2] = (other[:, :2] + 1) % 3
    assert torch.allclose(partial_dice_ce(logits, target, half), partial_dice_ce(logits, other, half))


def test_options_are_checked():
    with pytest.raises(SemisegError, match="decay"):
        create_method("mean-teacher", train_config(method="mean-teacher", method_options={"decay": 1.5}))
    with pytest.raises(SemisegError, match="no option 'decy'"):
        create_method("mean-teacher", train_config(method="mean-teacher", method_options={"decy": 0.9}))


def _final(run):
    return torch.load(run / "checkpoints" / "final.pt", weights_only=True)["nets"]


FAST = ["--base-features", "4", "--workers", "0", "--amp", "off", "-q"]


@pytest.mark.parametrize("mix,config", [("copy-paste", "3d"), ("none", "3d"), ("copy-paste", "2d")])
def test_mean_teacher_trains_and_its_teacher_predicts(tiny_work, tmp_path, mix, config):
    run = tmp_path / "mt"
    assert main(["train", str(tiny_work), "-o", str(run), "--method", "mean-teacher", "--labeled", "2", "--mix", mix,
                 "--config", config, "--iterations", "3", "--val-every", "3", "--log-every", "1", *FAST]) == 0
    rows = (run / "metrics.csv").read_text().splitlines()
    assert "loss_pseudo" in rows[0] and len(rows) == 4
    nets = _final(run)
    assert set(nets) == {"net", "teacher"}
    assert any(not torch.equal(nets["net"][k], nets["teacher"][k]) for k in nets["net"])  # an average, not a copy
    assert json.loads((run / "networks.json").read_text())["predict_with"] == ["teacher"]


def test_warm_start_and_copy_paste_pretraining(tiny_work, tmp_path, capsys):
    pre = tmp_path / "pre"
    assert main(["train", str(tiny_work), "-o", str(pre), "--labeled", "2", "--supervised-mix", "copy-paste",
                 "--iterations", "2", "--val-every", "0", *FAST]) == 0
    # lr 0: the warm-started networks cannot move, so both must equal the pre-trained net exactly
    run = tmp_path / "mt"
    assert main(["train", str(tiny_work), "-o", str(run), "--method", "mean-teacher", "--labeled", "2",
                 "--init", f"{pre}@final", "--lr", "0", "--iterations", "1", "--val-every", "0", *FAST]) == 0
    src, got = _final(pre)["net"], _final(run)
    assert all(torch.equal(got["net"][k], src[k]) for k in src)
    # the teacher started as that net too: its average of two equal weights is them, to rounding
    assert all(torch.allclose(got["teacher"][k], src[k], atol=1e-6) for k in src)
    assert "warm start from" in (run / "log.txt").read_text()
    # a CPS pair starts both networks from the one supervised net
    cps = tmp_path / "cps"
    assert main(["train", str(tiny_work), "-o", str(cps), "--method", "cps", "--labeled", "2", "--init", str(pre),
                 "--lr", "0", "--iterations", "1", "--val-every", "0", *FAST]) == 0
    got = _final(cps)
    assert all(torch.equal(got["net1"][k], src[k]) and torch.equal(got["net2"][k], src[k]) for k in src)
    # another width is another network: refused by name, nothing written
    bad = tmp_path / "bad"
    assert main(["train", str(tiny_work), "-o", str(bad), "--init", str(pre), "--iterations", "1",
                 "--base-features", "8", "--workers", "0", "-q"]) == 2
    assert "--init" in capsys.readouterr().err and not (bad / "config.json").exists()
