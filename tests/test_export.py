"""semiseg export and -m MODEL.zip: same labels as the run folder, ONNX Runtime and OpenVINO backends
within tolerance of torch, and every damaged or foreign model file refused by name without running
anything in it.

ONNX export and the ONNX Runtime / OpenVINO backends run in their own processes here (the CLI, or a
short script), as a user runs them: in one long pytest process, after they had run in-process, an
unrelated later test died of a segmentation fault (twice, at different tests; never with this file
left out, never in isolation)."""

import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import geom

from semiseg.cli import main
from semiseg.data.io import read_image, write_image
from semiseg.inference import load_models
from semiseg.inference.export import export_model
from semiseg.inference.modelfile import read_model_file, write_model_file
from semiseg.inference.predict import predict_folder
from semiseg.utils import SemisegError


def _inputs(tmp_path, n=2, channels=1):
    d = tmp_path / f"in{channels}"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        for c in range(channels):
            img = rng.normal(50, 10, (11, 23, 27)).astype(np.float32)
            write_image(img, geom((11, 23, 27), (0.9, 1.1, 2.3), origin=(3.5, -7.25, 11.0)), d / f"IN_{i:03d}_{c:04d}.nii.gz")
    return d


def _rewrite(src, dst, change):
    """Copy a zip member by member, ``change(name, data) -> data``."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for n in a.namelist():
            b.writestr(n, change(n, a.read(n)))


def _semiseg(*args):
    return subprocess.run([sys.executable, "-m", "semiseg", *map(str, args)], capture_output=True, text=True)


def test_model_file_predicts_like_the_run_and_carries_settings(run, tmp_path):
    model = tmp_path / "m.zip"
    p = _semiseg("export", run, "-o", model, "--largest-component")
    assert p.returncode == 0, p.stderr
    assert "max |logit diff|" in p.stdout and str(model) in p.stdout
    manifest, blobs = read_model_file(model)
    assert manifest["members"][0]["files"]["net"]["onnx_max_abs_diff"] < 1e-3
    assert manifest["inference"]["largest_component"] is True and manifest["labels"]
    assert manifest["versions"]["torch"] == torch.__version__
    assert all(not n.endswith((".pt", ".pkl")) for n in blobs)  # no pickle anywhere
    d = _inputs(tmp_path)
    predict_folder([str(run)], d, tmp_path / "a", largest_component=True, progress=False)
    predict_folder([str(model)], d, tmp_path / "b", progress=False)  # largest component from the file
    for i in range(2):
        a, ga = read_image(tmp_path / "a" / f"IN_{i:03d}.nii.gz")
        b, gb = read_image(tmp_path / "b" / f"IN_{i:03d}.nii.gz")
        assert np.array_equal(a, b) and np.allclose(ga.origin, gb.origin)
    # the CLI: -m alone, and an ensemble of a run folder and the model file
    assert main(["predict", "-m", str(model), "-i", str(d), "-o", str(tmp_path / "c"), "-q"]) == 0
    assert main(["predict", str(run), "-m", str(model), "-i", str(d), "-o", str(tmp_path / "e"), "-q"]) == 0
    assert main(["predict", "-i", str(d), "-o", str(tmp_path / "f"), "-q"]) == 2


_COMPARE = """
import json, sys
import numpy as np, torch
from semiseg.inference import load_models
from semiseg.inference.sliding_window import sliding_window_probs
model, run, backend = sys.argv[1:]
cpu = torch.device("cpu")
(ref,) = load_models([model], "best", None, cpu, "torch", amp="off")
(other,) = load_models([model], "best", None, cpu, backend, amp="off")
(direct,) = load_models([run], "best", None, cpu, backend, amp="off")  # ONNX graph made at load time
data = np.random.default_rng(0).normal(0, 1, (1, 14, 30, 26)).astype(np.float32)
p_ref = sliding_window_probs(ref.nets, data, ref.cfg, amp="off", tta=True)
p = sliding_window_probs(other.nets, data, other.cfg, amp="off", tta=True)
p_direct = sliding_window_probs(direct.nets, data, direct.cfg, amp="off", tta=True)
print(json.dumps({"shape_ok": p.shape == p_ref.shape, "diff": float((p - p_ref).abs().max()),
                  "diff_direct": float((p_direct - p_ref).abs().max()),
                  "same_labels": bool(torch.equal(p.argmax(0), p_ref.argmax(0)))}))
"""


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backends_match_torch(run, tmp_path, backend):
    model = tmp_path / "m.zip"
    assert _semiseg("export", run, "-o", model).returncode == 0
    p = subprocess.run([sys.executable, "-c", _COMPARE, str(model), str(run), backend], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["shape_ok"] and r["same_labels"], r
    assert r["diff"] < 1e-4 and r["diff_direct"] < 1e-4, r
    d = _inputs(tmp_path)
    p = _semiseg("predict", "-m", model, "--backend", backend, "-i", d, "-o", tmp_path / "o", "-q", "--amp", "off",
                 "--profile", tmp_path / "p.csv")
    assert p.returncode == 0, p.stderr
    head = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert {"read_s", "preprocess_s", "network_s", "blend_s", "resample_s", "write_s", "backend"} <= set(head)
    predict_folder([str(model)], d, tmp_path / "t", amp="off", progress=False)
    for f in sorted((tmp_path / "t").glob("*.nii.gz")):
        assert np.array_equal(read_image(f)[0], read_image(tmp_path / "o" / f.name)[0])


def test_damaged_and_foreign_model_files_are_refused(run, tmp_path, capsys):
    model = tmp_path / "m.zip"
    export_model([str(run)], model, onnx=False)
    d = _inputs(tmp_path)

    def refused(path, *words):
        with pytest.raises(SemisegError) as e:
            load_models([str(path)], "best", None, torch.device("cpu"))
        assert str(path) in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
        assert main(["predict", "-m", str(path), "-i", str(d), "-o", str(tmp_path / "never"), "-q"]) == 2
        assert not (tmp_path / "never").exists() or not any((tmp_path / "never").iterdir())

    raw = model.read_bytes()
    (tmp_path / "trunc.zip").write_bytes(raw[: len(raw) // 2])
    refused(tmp_path / "trunc.zip", "truncated")
    _rewrite(model, tmp_path / "altered.zip",
             lambda n, b: b[:-1] + bytes([b[-1] ^ 1]) if n.endswith(".safetensors") else b)
    refused(tmp_path / "altered.zip", "checksum")

    def newer(n, b):
        if n != "model.json":
            return b
        return json.dumps(dict(json.loads(b), format=99)).encode()
    _rewrite(model, tmp_path / "newer.zip", newer)
    refused(tmp_path / "newer.zip", "format 99")
    (tmp_path / "notzip.zip").write_text("hello")
    refused(tmp_path / "notzip.zip", "not a readable model file")
    refused(tmp_path / "absent.zip", "no such model file")

    # a pickle that would run code, planted where the weights go with a valid checksum: refused, never run
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))
    manifest, blobs = read_model_file(model)
    (wname,) = [n for n in blobs if n.endswith(".safetensors")]
    blobs[wname] = pickle.dumps(Evil())
    manifest.pop("files")
    write_model_file(tmp_path / "evil.zip", manifest, blobs)
    refused(tmp_path / "evil.zip", "safetensors")
    assert not (tmp_path / "pwned").exists()


def test_model_for_other_channels_and_bad_export(run, tmp_path):
    model = tmp_path / "m.zip"
    export_model([str(run)], model, onnx=False)
    d2 = _inputs(tmp_path, channels=2)
    with pytest.raises(SemisegError, match="channels"):
        predict_folder([str(model)], d2, tmp_path / "o", progress=False)
    with pytest.raises(SemisegError, match="ends in .zip"):
        export_model([str(run)], tmp_path / "m.pt")
    with pytest.raises(SemisegError, match="no such checkpoint"):
        export_model([f"{run}@nothere"], tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_the_runs_postprocessing_choice_travels_into_the_model_file(run, tmp_path):
    best = json.loads((run / "summary.json").read_text())["best_iteration"]
    (run / "postprocessing.json").write_text(json.dumps({"iteration": best, "largest_component_classes": [2]}))
    for flag, expected in ((None, [2]), ("--no-largest-component", False), ("--largest-component", True)):
        model = tmp_path / f"m{flag}.zip"
        p = _semiseg("export", run, "-o", model, "--no-onnx", *([flag] if flag else []))
        assert p.returncode == 0, p.stderr
        assert read_model_file(model)[0]["inference"]["largest_component"] == expected
