"""Reading and writing medical images with their geometry.

Arrays are NumPy arrays in SimpleITK's index order ``(z, y, x)`` (channels first when there
are several); :class:`Geometry` holds spacing, origin and direction in ITK's ``(x, y, z)``
physical order, exactly as SimpleITK reports them. ``geometry.spacing_zyx`` gives the spacing
in array order.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``,
``.mhd``) through SimpleITK. NIfTI voxel data are read with nibabel instead, because SimpleITK's
NIfTI reader silently returns a truncated ``.nii.gz`` padded with zeros and turns NaN/Inf into
0; nibabel raises on truncation and keeps non-finite values, so they can be reported.
"""
from __future__ import annotations

import errno
import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..utils import SemisegError, atomic_path

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class Geometry:
    """Physical geometry of an image, in ITK's (x, y, z) order."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    size: tuple[int, ...] = field(default=())  # (x, y, z), as SimpleITK's GetSize()

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        return tuple(reversed(self.spacing))

    @property
    def shape_zyx(self) -> tuple[int, ...]:
        return tuple(reversed(self.size))

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction), "size": list(self.size)}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(tuple(float(v) for v in d["spacing"]), tuple(float(v) for v in d["origin"]),
                   tuple(float(v) for v in d["direction"]), tuple(int(v) for v in d.get("size", ())))

    def mismatch(self, other: "Geometry", tol: float = 1e-4) -> list[str]:
        """Describe how ``other`` differs from this geometry (empty list if it agrees).

        Spacing is compared relatively (``tol`` of the value); origin in mm with a tolerance of
        ``tol`` times the largest spacing (at least 1e-3 mm); direction cosines absolutely.
        """
        out = []
        if self.size and other.size and tuple(self.size) != tuple(other.size):
            out.append(f"size {list(other.size)} != {list(self.size)}")
        if len(self.spacing) != len(other.spacing):
            out.append(f"dimension {len(other.spacing)} != {len(self.spacing)}")
            return out
        a, b = np.asarray(self.spacing), np.asarray(other.spacing)
        if np.any(np.abs(a - b) > tol * np.maximum(np.abs(a), 1e-6)):
            out.append(f"spacing {_fmt(other.spacing)} != {_fmt(self.spacing)}")
        otol = max(1e-3, tol * float(np.max(a)))
        if np.any(np.abs(np.asarray(self.origin) - np.asarray(other.origin)) > otol):
            out.append(f"origin {_fmt(other.origin)} != {_fmt(self.origin)}")
        if np.any(np.abs(np.asarray(self.direction) - np.asarray(other.direction)) > max(tol, 1e-5)):
            out.append(f"direction {_fmt(other.direction)} != {_fmt(self.direction)}")
        return out


def _fmt(v) -> str:
    return "[" + ", ".join(f"{x:.6g}" for x in v) + "]"


def file_ending(path: str | os.PathLike) -> str:
    name = str(path).lower()
    for e in SUPPORTED_ENDINGS:
        if name.endswith(e):
            return e
    return Path(name).suffix


def read_geometry(path: str | os.PathLike) -> Geometry:
    """Read only the header of an image (cheap). Raises SemisegError if it is unreadable."""
    path = Path(path)
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    try:
        r.ReadImageInformation()
    except RuntimeError as e:
        raise SemisegError(f"{path}: unreadable image header ({_short(e)})") from None
    return Geometry(tuple(r.GetSpacing()), tuple(r.GetOrigin()), tuple(r.GetDirection()),
                    tuple(r.GetSize()))


def _complete(path: Path, img: sitk.Image) -> bool:
    """Whether the file at ``path`` holds all of ``img``: for NIfTI, the header's data offset plus
    the voxels' bytes against the file's size (``.nii``) or the gzip trailer's length (``.nii.gz``);
    other formats are read back and compared."""
    nbytes = sitk.GetArrayViewFromImage(img).nbytes
    name = str(path)
    try:
        if name.endswith((".nii", ".nii.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                head = f.read(540)
            if struct.unpack("<i", head[:4])[0] == 348:
                offset = int(struct.unpack("<f", head[108:112])[0])
            else:  # NIfTI-2
                offset = struct.unpack("<q", head[168:176])[0]
            if name.endswith(".gz"):
                with open(path, "rb") as f:
                    f.seek(-4, os.SEEK_END)
                    return int.from_bytes(f.read(4), "little") == (offset + nbytes) % (1 << 32)
            return path.stat().st_size >= offset + nbytes
        back = sitk.ReadImage(name)
        return back.GetSize() == img.GetSize() and np.array_equal(sitk.GetArrayViewFromImage(back),
                                                                    sitk.GetArrayViewFromImage(img))
    except (OSError, EOFError, RuntimeError, struct.error):
        return False


def _disk_full(folder: Path) -> bool:
    """True when ``folder``'s file system has no room left, or this process may not grow a file
    (RLIMIT_FSIZE): ITK's writer does not say why a write failed."""
    import resource  # noqa: PLC0415 - only on a failed write

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize < (1 << 20) or soft != resource.RLIM_INFINITY


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    msg = [m for m in msg if m.strip()]
    return (msg[-1] if msg else type(e).__name__)[:300]


def read_image(path: str | os.PathLike, require_finite: bool = False) -> tuple[np.ndarray, Geometry]:
    """Read an image: ``(array in (z, y, x) order, Geometry)``.

    Raises :class:`SemisegError` naming the file when it is missing, unreadable, truncated or
    corrupt, or (with ``require_finite``) holds NaN or Inf voxels.
    """
    path = Path(path)
    if not path.is_file():
        raise SemisegError(f"{path}: file not found")
    geom = read_geometry(path)
    ending = file_ending(path)
    if ending in (".nii", ".nii.gz"):
        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
        except EOFError as e:
            raise SemisegError(f"{path}: truncated file ({e})") from None
        except Exception as e:  # nibabel raises many types for corrupt files
            raise SemisegError(f"{path}: corrupt or unreadable NIfTI ({_short(e)})") from None
        # nibabel keeps trailing singleton dims that ITK drops, and vice versa: squeeze beyond ndim
        while data.ndim > geom.ndim and data.shape[-1] == 1:
            data = data[..., 0]
        arr = np.ascontiguousarray(data.T)
        if arr.shape != geom.shape_zyx:
            raise SemisegError(f"{path}: voxel data shape {arr.shape[::-1]} disagrees with the header "
                               f"size {list(geom.size)}")
    else:
        try:
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError as e:
            raise SemisegError(f"{path}: corrupt, truncated or unreadable image ({_short(e)})") from None
        if arr.ndim > geom.ndim:  # vector pixel types: components last in SimpleITK
            arr = np.moveaxis(arr, -1, 0)
    if require_finite and np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise SemisegError(f"{path}: {bad} NaN or Inf voxels")
    return arr, geom


def write_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike,
                compress: bool = True) -> None:
    """Write ``array`` (z, y, x) with ``geometry`` atomically (temporary file + rename)."""
    path = Path(path)
    if array.ndim != geometry.ndim:
        raise ValueError(f"array has {array.ndim} dims, geometry {geometry.ndim}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(tuple(float(v) for v in geometry.spacing))
    img.SetOrigin(tuple(float(v) for v in geometry.origin))
    img.SetDirection(tuple(float(v) for v in geometry.direction))
    if geometry.size and tuple(img.GetSize()) != tuple(geometry.size):
        raise ValueError(f"{path}: array shape {array.shape} does not match geometry size {geometry.size}")
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), compress)
        except RuntimeError as e:  # ITK reports a full disk as a generic write error
            if _disk_full(tmp.parent):
                raise OSError(errno.ENOSPC, f"no room to write the image ({_short(e)})", str(path)) from None
            raise SemisegError(f"{path}: cannot write the image ({_short(e)})") from None
        # ITK's writers can report success on a file cut short (a full disk, a file-size limit): the
        # file is checked before it takes its final name, so a rerun never skips a partial output
        if not _complete(tmp, img):
            if _disk_full(tmp.parent):
                raise OSError(errno.ENOSPC, "no room to write the image (the file came out incomplete)", str(path))
            raise SemisegError(f"{path}: the image writer left an incomplete file")
