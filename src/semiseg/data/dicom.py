"""DICOM in and out: image series folders as inputs, DICOM SEG as an output.

A series is read with SimpleITK's GDCM series reader (slices ordered by position) after a check
with pydicom that its slices are evenly spaced along the slice normal (a missing slice or a
non-uniform series is an error naming the series, not a silently stretched volume). A folder that
holds several series is an error listing their UIDs unless one is chosen (``--series-uid``).

A label map predicted on a series goes back as a DICOM Segmentation (highdicom) that references
the source series, with the dataset's label names as segment labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..utils import SemisegError, atomic_path
from .io import Geometry

SPACING_TOLERANCE = 0.01  # relative deviation of one gap from the median gap


@dataclass
class DicomSeries:
    """One image series of a folder: its UID and files in slice order (GDCM's)."""
    folder: Path
    uid: str
    files: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.folder} (series {self.uid})"


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path) -> bool:
    """A folder holding at least one DICOM Part 10 file (checked on its first files)."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = [f for f in sorted(path.iterdir()) if f.is_file()][:20]
    return any(is_dicom_file(f) for f in files)


def open_series(folder, series_uid: str | None = None) -> DicomSeries:
    """The series of ``folder`` (``series_uid`` when it holds several), checked for uniform slice
    spacing. SemisegError naming the folder or series otherwise."""
    folder = Path(folder)
    try:
        uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as e:
        raise SemisegError(f"{folder}: cannot list DICOM series ({str(e).strip()[:200]})") from None
    if not uids:
        raise SemisegError(f"{folder}: no DICOM image series")
    if series_uid is None:
        if len(uids) > 1:
            raise SemisegError(f"{folder}: holds {len(uids)} DICOM series; choose one with --series-uid: "
                               + ", ".join(uids))
        series_uid = uids[0]
    elif series_uid not in uids:
        raise SemisegError(f"{folder}: no series {series_uid} (it holds {', '.join(uids)})")
    files = [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)]
    series = DicomSeries(folder, series_uid, files)
    check_spacing(series)
    return series


def check_spacing(series: DicomSeries) -> None:
    """Every slice present once and evenly spaced along the slice normal."""
    import pydicom  # noqa: PLC0415 - 0.25 s of start-up, only for DICOM input
    if len(series.files) < 2:
        raise SemisegError(f"{series}: a single slice; a 3D series is needed")
    pos = []
    for f in series.files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            ipp = [float(v) for v in ds.ImagePositionPatient]
            iop = [float(v) for v in ds.ImageOrientationPatient]
        except (AttributeError, TypeError, ValueError, pydicom.errors.InvalidDicomError) as e:
            raise SemisegError(f"{f}: no usable ImagePositionPatient/ImageOrientationPatient ({e})") from None
        pos.append(np.dot(np.cross(iop[:3], iop[3:]), ipp))
    gaps = np.diff(np.sort(pos))
    med = float(np.median(gaps))
    if med <= 0 or np.any(gaps <= 1e-6 * max(abs(med), 1.0)):
        raise SemisegError(f"{series}: two slices share a position (duplicate slices)")
    bad = np.nonzero(np.abs(gaps - med) > SPACING_TOLERANCE * med)[0]
    if len(bad):
        where = ", ".join(f"{gaps[i]:.3g} mm after slice {i}" for i in bad[:5])
        raise SemisegError(f"{series}: non-uniform slice spacing (median {med:.3g} mm; {where}): missing slices?")


def read_series(series: DicomSeries) -> tuple[np.ndarray, Geometry]:
    """(array (z, y, x) in GDCM's slice order, Geometry) of a checked series."""
    r = sitk.ImageSeriesReader()
    r.SetFileNames([str(f) for f in series.files])
    try:
        img = r.Execute()
    except RuntimeError as e:
        raise SemisegError(f"{series}: unreadable DICOM series ({str(e).strip().splitlines()[-1][:200]})") from None
    geom = Geometry(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()), tuple(img.GetSize()))
    return sitk.GetArrayFromImage(img), geom


def write_dicom_seg(seg: np.ndarray, series: DicomSeries, out, class_names: list[str], software: str) -> Path:
    """A DICOM Segmentation of ``seg`` (z, y, x, in the series' slice order) referencing ``series``;
    segment ``c`` (class ``c`` of the label map) is labelled ``class_names[c - 1]``. Written atomically."""
    import highdicom as hd  # noqa: PLC0415 - heavy, only when a SEG is written
    import pydicom  # noqa: PLC0415
    from pydicom.sr.codedict import codes  # noqa: PLC0415

    sources = [pydicom.dcmread(f) for f in series.files]
    if seg.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise SemisegError(f"{series}: the label map {seg.shape} does not match the series")
    names = dict(enumerate(class_names, start=1))
    values = sorted(names)
    algo = hd.AlgorithmIdentificationSequence(name="semiseg", family=codes.cid7162.ArtificialIntelligence,
                                              version=software)
    descs = [hd.seg.SegmentDescription(segment_number=v, segment_label=names[v][:64],
                                       segmented_property_category=codes.SCT.Tissue,
                                       segmented_property_type=codes.SCT.Tissue,
                                       algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                       algorithm_identification=algo) for v in values]
    obj = hd.seg.Segmentation(
        source_images=sources, pixel_array=seg.astype(np.uint8 if len(values) < 256 else np.uint16),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descs,
        series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="semiseg", manufacturer_model_name="semiseg", software_versions=software,
        device_serial_number="none", series_description="semiseg segmentation", omit_empty_frames=False)
    out = Path(out)
    with atomic_path(out, suffix=".dcm") as tmp:
        obj.save_as(tmp)
    return out
