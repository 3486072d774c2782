"""The torch device and mixed precision: CUDA when a user has it, bf16 autocast on CPUs that do it
natively. One home for both, so training, validation and prediction agree (``--amp``)."""
from __future__ import annotations

import torch

AMP_CHOICES = ("auto", "off", "bf16")


def default_device(device: str | None = None) -> torch.device:
    """``device`` when given, else CUDA when available, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - older torch or no oneDNN
        return False


def autocast_dtype(amp: str, device: torch.device):
    """Mixed precision: "auto" is fp16 on CUDA and bf16 on a CPU with native bf16 (AVX512-BF16/AMX:
    ~2.7x faster 3D convolutions on this machine), else none; "off" is none; "bf16" forces bf16."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_bf16_supported() else None


def autocast(device: torch.device, amp: str = "auto"):
    """A ``torch.autocast`` context for ``amp`` on ``device`` (disabled when it gives no dtype)."""
    dt = autocast_dtype(amp, device)
    return torch.autocast(device.type, dtype=dt or torch.float32, enabled=dt is not None)
