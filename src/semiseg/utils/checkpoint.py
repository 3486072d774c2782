"""Checkpoint files: written atomically, read with ``weights_only=True`` (a checkpoint from
someone else must not run code on this machine)."""
from __future__ import annotations

from pathlib import Path

import torch

from . import SemisegError, atomic_path


def save_checkpoint(path: Path, obj: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a bad file, whatever the unpickler says
        raise SemisegError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {e})") from None
