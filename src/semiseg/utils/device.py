"""The torch device and mixed precision: CUDA when a user has it; on a CPU, bf16 autocast only where
it is measured to be faster. One home for both, so training, validation and prediction agree (``--amp``).

Why measure: oneDNN runs bf16 natively only on CPUs with AVX512-BF16 or AMX; on other AVX-512 CPUs it
emulates it, and a bf16 training step then costs several times an fp32 one (docs/benchmarks.md), while
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` answers yes on both kinds. So ``--amp auto`` on a CPU
is resolved by timing: training by a probe of its real step (:mod:`semiseg.training.precision`,
recorded in ``RUN/precision.json``), inference by the run's record when it was measured on this host,
else by :func:`host_bf16_faster` (a fixed convolution, timed once per process).
"""
from __future__ import annotations

import functools
import os
import platform
import time

import torch

AMP_CHOICES = ("auto", "off", "bf16")  # what a user asks for
RESOLVED = ("off", "bf16", "fp16")     # what runs: "auto" resolves to one of these
BF16_GAIN = 0.9  # bf16 is chosen when its time is at most this share of fp32's (a clear win, not noise)
PRECISION_FILE = "precision.json"  # in a run folder: the resolved choice, how, and the host it was measured on


def default_device(device: str | None = None) -> torch.device:
    """``device`` when given, else CUDA when available, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 on this CPU at all (natively or emulated: it cannot tell them apart)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - older torch or no oneDNN
        return False


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset]:
    """(CPU model name, CPU flags) from /proc/cpuinfo (the platform's name and no flags elsewhere)."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = frozenset(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, flags


def native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere oneDNN emulates it."""
    return bool(cpu_info()[1] & {"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def host_id() -> str:
    """What decides bf16's speed on this host: the CPU model, its bf16 flags, the oneDNN ISA cap and
    torch's version. A precision measured under another host id is measured again."""
    model, flags = cpu_info()
    bf16 = ",".join(sorted(flags & {"avx512_bf16", "amx_bf16", "avx512f"})) or "none"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    return f"{model} | {bf16} | isa cap {cap or 'none'} | torch {torch.__version__}"


def static_amp(amp: str, device: torch.device) -> str | None:
    """The resolved precision when no measurement is needed (asked for, CUDA: fp16, a CPU without any
    bf16: off), else None (``auto`` on a CPU whose oneDNN offers bf16: measure)."""
    if amp in RESOLVED:
        return amp
    if device.type == "cuda":
        return "fp16"
    if device.type != "cpu" or not cpu_bf16_supported():
        return "off"
    return None


def bf16_wins(fp32_s: float, bf16_s: float) -> bool:
    """The decision rule of every probe: bf16 when it takes at most ``BF16_GAIN`` of fp32's time."""
    return bf16_s <= BF16_GAIN * fp32_s


def time_both(run, reps: int = 2) -> tuple[float, float]:
    """Seconds of ``run(dtype)`` (dtype None: fp32, else bf16 autocast) after one warm-up each, the
    fastest of ``reps`` alternating repetitions: (fp32, bf16)."""
    best = {None: float("inf"), torch.bfloat16: float("inf")}
    for dt in best:
        run(dt)
    for _ in range(reps):
        for dt in best:
            t0 = time.perf_counter()
            run(dt)
            best[dt] = min(best[dt], time.perf_counter() - t0)
    return best[None], best[torch.bfloat16]


@functools.lru_cache(maxsize=1)
def host_bf16_faster() -> tuple[bool, float, float]:
    """(bf16 wins, fp32 s, bf16 s) of a fixed 3D convolution block's forward on this host, measured
    once per process (about a second): inference's answer when no run measured this host."""
    conv = torch.nn.Sequential(torch.nn.Conv3d(16, 32, 3, padding=1), torch.nn.LeakyReLU(),
                               torch.nn.Conv3d(32, 32, 3, padding=1)).eval()
    x = torch.randn(1, 16, 32, 48, 48, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def run(dt):
        with torch.autocast("cpu", dtype=dt or torch.float32, enabled=dt is not None):
            conv(x)

    fp32, bf16 = time_both(run)
    return bf16_wins(fp32, bf16), fp32, bf16


def inference_amp(amp: str, device: torch.device, record: dict | None = None) -> str:
    """The precision inference runs in: ``amp`` when given; for ``auto``, the static answer
    (:func:`static_amp`), else the training run's measured choice (``record``: its precision.json)
    when it was measured on this host, else :func:`host_bf16_faster`."""
    fixed = static_amp(amp, device)
    if fixed is not None:
        return fixed
    if record and record.get("host") == host_id() and record.get("amp") in RESOLVED:
        return record["amp"]
    return "bf16" if host_bf16_faster()[0] else "off"


def autocast_dtype(amp: str, device: torch.device):
    """The autocast dtype of a precision: "off" none, "bf16" bf16, "fp16" fp16; "auto" (a caller that
    did not resolve it) resolves as :func:`inference_amp` without a run record."""
    if amp == "auto":
        amp = inference_amp(amp, device)
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast(device: torch.device, amp: str = "auto"):
    """A ``torch.autocast`` context for ``amp`` on ``device`` (disabled when it gives no dtype)."""
    dt = autocast_dtype(amp, device)
    return torch.autocast(device.type, dtype=dt or torch.float32, enabled=dt is not None)
