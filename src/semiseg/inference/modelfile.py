"""The one-file model format (``semiseg export``): a zip that holds no code.

Layout::

    model.json                       manifest: format, versions, inference settings, members, checksums
    members/<i>/plans.json           each member run's plan
    members/<i>/<net>.safetensors    each network's weights (safetensors: tensors only, no pickle)
    members/<i>/<net>.onnx           each network's ONNX graph (segmentation networks)

Reading checks the format version, that every file the manifest lists is present with its SHA-256,
and reads weights with safetensors; nothing in the file is ever executed or unpickled.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from safetensors.torch import load, save

from ..utils import SemisegError, atomic_path

FORMAT = 1
MANIFEST = "model.json"


def is_model_file(spec) -> bool:
    return str(spec).lower().endswith(".zip")


def write_model_file(out, manifest: dict, blobs: dict[str, bytes]) -> Path:
    """``manifest`` plus ``blobs`` (archive name -> bytes) into ``out``, atomically; the manifest gets
    ``format`` and the SHA-256 of every blob."""
    out = Path(out)
    manifest = dict(manifest, format=FORMAT,
                    files={name: hashlib.sha256(data).hexdigest() for name, data in sorted(blobs.items())})
    with atomic_path(out, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            z.writestr(MANIFEST, json.dumps(manifest, indent=2))
            for name, data in sorted(blobs.items()):
                z.writestr(name, data)
    return out


def read_model_file(path) -> tuple[dict, dict[str, bytes]]:
    """(manifest, blobs) of a model file, every blob checked against its SHA-256; SemisegError naming
    the file for anything else (not a zip, truncated, altered, another format version)."""
    path = Path(path)
    if not path.is_file():
        raise SemisegError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if MANIFEST not in names:
                raise SemisegError(f"{path}: not a semiseg model (no {MANIFEST}; make one with `semiseg export`)")
            manifest = json.loads(z.read(MANIFEST))
            fmt = manifest.get("format")
            if fmt != FORMAT:
                raise SemisegError(f"{path}: model format {fmt} (made by semiseg {manifest.get('semiseg', '?')}); "
                                   f"this semiseg reads format {FORMAT}: export it again with this version")
            files = manifest.get("files") or {}
            missing = sorted(set(files) - names)
            if missing:
                raise SemisegError(f"{path}: incomplete model, missing {', '.join(missing)}")
            blobs = {}
            for name, digest in files.items():
                data = z.read(name)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise SemisegError(f"{path}: {name} does not match its checksum (the file was altered or "
                                       "damaged)")
                blobs[name] = data
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise SemisegError(f"{path}: not a readable model file, truncated or damaged ({type(e).__name__}: {e})") \
            from None
    return manifest, blobs


def load_weights(data: bytes, where: str, aliases: dict | None = None) -> dict:
    """A state dict from safetensors bytes (tensors only; SemisegError naming ``where`` otherwise);
    ``aliases`` (name -> stored name) restores the names of shared tensors."""
    try:
        state = load(data)
    except Exception as e:  # noqa: BLE001 - whatever the parser says, it is not valid safetensors
        raise SemisegError(f"{where}: not valid safetensors weights ({type(e).__name__}: {e})") from None
    for name, kept in (aliases or {}).items():
        if kept not in state:
            raise SemisegError(f"{where}: alias {name} points to {kept}, which is not stored")
        state[name] = state[kept]
    return state


def save_weights(state: dict) -> tuple[bytes, dict]:
    """(safetensors bytes, aliases) of a state dict: a tensor stored under several names (MONAI's
    DynUNet registers each block twice) is written once, the other names kept as aliases."""
    kept, aliases, seen = {}, {}, {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if key in seen:
            aliases[k] = seen[key]
        else:
            seen[key] = k
            kept[k] = v.detach().cpu().contiguous()
    return save(kept), aliases
