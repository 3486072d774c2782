"""Where a network's forward pass runs: PyTorch, ONNX Runtime or OpenVINO.

A backend turns one network into a callable ``(B, C, *patch) tensor -> (B, K, *patch) logits``;
sliding windows, Gaussian blending, mirroring TTA and ensembling stay in
:mod:`.sliding_window` and :mod:`.ensemble`, shared by every backend. The ONNX graph of a network
is made once (:func:`onnx_graph`, at ``semiseg export`` time; for a run folder when it is loaded)
with the plan's patch and a free batch axis.

ONNX Runtime runs float32. OpenVINO follows the model's resolved precision like the torch path
(:func:`semiseg.utils.device.inference_amp`: bf16 where it was measured faster on this host, or with
``--amp bf16``; float32 otherwise).
"""
from __future__ import annotations

import io
import time
import warnings

import numpy as np
import torch

from ..utils import SemisegError
from ..utils.device import autocast_dtype

BACKENDS = ("torch", "onnxruntime", "openvino")
OPSET = 17


def onnx_graph(net: torch.nn.Module, patch, in_channels: int) -> bytes:
    """The ONNX graph (opset 17, free batch axis) of a segmentation network in eval mode for windows of
    ``patch``; the TorchScript-based exporter (no extra dependency, a few seconds)."""
    net = net.eval().cpu()
    x = torch.zeros((2, in_channels, *patch))
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buf, input_names=["image"], output_names=["logits"], opset_version=OPSET,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return buf.getvalue()


class _Runner:
    """A compiled graph called like a torch module (``eval()`` is a no-op)."""

    backend = ""

    def eval(self):
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self._run(np.ascontiguousarray(x.detach().float().cpu().numpy()))
        return torch.from_numpy(np.asarray(y, dtype=np.float32)).to(x.device)


class OnnxRuntimeNet(_Runner):
    backend = "onnxruntime"

    def __init__(self, graph: bytes):
        import onnxruntime as ort  # noqa: PLC0415 - an optional backend, imported when chosen
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def _run(self, x):
        return self.session.run(None, {self.input: x})[0]


class OpenVinoNet(_Runner):
    backend = "openvino"

    def __init__(self, graph: bytes, amp: str = "auto"):
        import openvino as ov  # noqa: PLC0415 - an optional backend, imported when chosen
        core = ov.Core()
        bf16 = autocast_dtype(amp, torch.device("cpu")) == torch.bfloat16
        self.compiled = core.compile_model(core.read_model(io.BytesIO(graph)), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"})

    def _run(self, x):
        return self.compiled(x)[0]


def backend_net(backend: str, net: torch.nn.Module | None, graph: bytes | None, where: str, amp: str = "auto"):
    """``net`` itself for ``torch``, else a runner of its ONNX ``graph`` (``where`` names the model in
    errors)."""
    if backend not in BACKENDS:
        raise SemisegError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "torch":
        return net
    if graph is None:
        raise SemisegError(f"{where}: this network has no ONNX graph (propagation networks run with --backend "
                           "torch only)")
    try:
        return OnnxRuntimeNet(graph) if backend == "onnxruntime" else OpenVinoNet(graph, amp)
    except ImportError:
        raise SemisegError(f"--backend {backend}: the package is not installed (pip install "
                           f"{'onnxruntime' if backend == 'onnxruntime' else 'openvino'}, or "
                           "pip install -e '.[deploy]')") from None


class Timed:
    """Wraps a predictor and adds the seconds of its calls to ``times[key]`` (the per-stage profile)."""

    def __init__(self, fn, times: dict, key: str = "network"):
        self.fn, self.times, self.key = fn, times, key

    def __call__(self, x):
        t = time.perf_counter()
        y = self.fn(x)
        self.times[self.key] = self.times.get(self.key, 0.0) + time.perf_counter() - t
        return y
