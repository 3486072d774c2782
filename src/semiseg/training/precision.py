"""The training precision, decided once per run by measuring its real step on this host.

``--amp auto`` on a CPU whose oneDNN offers bf16 cannot be answered by a capability flag: bf16 is
native on CPUs with AVX512-BF16 or AMX (faster than fp32) and emulated on other AVX-512 CPUs (several
times slower; docs/benchmarks.md). So before its first step a run times the method's real forward and
backward on its first batch, in fp32 and in bf16 autocast (one warm-up each, then the fastest of two alternating
repetitions) and takes bf16 only when it is clearly faster (:func:`semiseg.utils.device.bf16_wins`).

The probe touches neither the weights nor any random stream: no optimizer steps, the networks'
buffers and the method's state are restored, the torch and NumPy generators are put back, the
batch is the sampler's pure function of (seed, iteration). Its seconds count in a time budget (it runs
on the run's clock). The choice is written to ``RUN/precision.json`` (the choice, how it was made, both
timings, the host), logged, kept on resume, and used by validation and by inference of the run on
the same host. ``--amp off|bf16`` skips the probe; on CUDA ``auto`` is fp16.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from ..methods import StepContext
from ..utils import read_json, write_json
from ..utils.device import PRECISION_FILE, RESOLVED, bf16_wins, host_id, static_amp, time_both


def probe_times(method, nets: dict, batch: dict, device: torch.device) -> tuple[float, float]:
    """(fp32, bf16) seconds of one forward + backward of ``method``'s losses on ``batch``. Tests
    replace it to force either outcome."""
    def run(dt):
        with torch.autocast(device.type, dtype=dt or torch.float32, enabled=dt is not None):
            loss = method.losses(nets, batch, StepContext(0, 0.0, lambda part: part.backward(), device,
                                                          "bf16" if dt is not None else "off"))["loss"]
        if loss.requires_grad:
            loss.backward()
        for n in nets.values():
            n.zero_grad(set_to_none=True)

    return time_both(run)


def probe(method, nets: dict, batch: dict, device: torch.device) -> dict:
    """Time the real step both ways, leaving networks, method and random streams as they were."""
    buffers = {k: copy.deepcopy(dict(n.named_buffers())) for k, n in nets.items()}
    method_state = copy.deepcopy(method.state_dict())
    rng = torch.get_rng_state(), np.random.get_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    modes = {k: n.training for k, n in nets.items()}
    t0 = time.time()
    try:
        for n in nets.values():
            n.train()
        fp32, bf16 = probe_times(method, nets, batch, device)
    finally:
        with torch.no_grad():
            for k, n in nets.items():
                for name, b in n.named_buffers():
                    b.copy_(buffers[k][name])
                n.train(modes[k])
                n.zero_grad(set_to_none=True)
        method.load_state_dict(method_state)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    choice = "bf16" if bf16_wins(fp32, bf16) else "off"
    return {"amp": choice, "how": "probe", "fp32_s": round(fp32, 4), "bf16_s": round(bf16, 4),
            "probe_s": round(time.time() - t0, 2)}


def decide(run: Path, amp: str, device: torch.device, resume: bool, measure) -> dict:
    """The run's precision record: kept from ``RUN/precision.json`` on resume; else ``amp`` when it
    needs no measurement (:func:`static_amp`), else ``measure()`` (:func:`probe` on the first batch).
    A run of an earlier semiseg resumed without the file gets what ``auto`` used to be: bf16 wherever
    oneDNN offers it."""
    path = Path(run) / PRECISION_FILE
    if resume:
        if path.exists():
            rec = read_json(path, "the run's precision")
            if rec.get("amp") in RESOLVED:
                return rec
        fixed = static_amp(amp, device)
        return {"amp": fixed or "bf16", "how": "resumed run without precision.json", "requested": amp,
                "host": host_id()}
    fixed = static_amp(amp, device)
    if fixed is not None:
        how = "asked (--amp)" if amp != "auto" else ("CUDA" if device.type == "cuda" else "no bf16 on this CPU")
        return {"amp": fixed, "how": how, "requested": amp, "host": host_id()}
    return dict(measure(), requested=amp, host=host_id())


def save(run: Path, rec: dict) -> None:
    write_json(rec, Path(run) / PRECISION_FILE)


def describe(rec: dict) -> str:
    """One line for the log and the report."""
    what = {"off": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[rec["amp"]]
    if rec.get("how") == "probe":
        return (f"precision: {what} (measured: a step takes {rec['fp32_s']:.3f} s in fp32, {rec['bf16_s']:.3f} s in "
                f"bf16; probe {rec['probe_s']:.1f} s, in the budget)")
    return f"precision: {what} ({rec.get('how', '')})"
