"""DICOM in and out: a series folder predicts like the same volume as NIfTI, the DICOM SEG decodes to
the same mask as the NIfTI output, and broken series (several series, missing slice, uneven spacing,
SEG without DICOM input) are refused by name."""

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from semiseg.cli import main
from semiseg.data.dataset import Case, read_case_image
from semiseg.data.dicom import open_series
from semiseg.data.io import Geometry, read_image, write_image
from semiseg.inference.predict import predict_folder
from semiseg.utils import SemisegError


def write_series(folder, volume, spacing_xyz=(0.8, 0.9, 2.5), origin=(-40.0, 12.0, 7.0), series_uid=None,
                 positions=None, study_uid=None):
    """An MR series (one file per slice, shuffled names) of ``volume`` (z, y, x int16) with an axial
    orientation; ``positions`` overrides the slice positions along z (mm)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or "1.2.826.0.1.3680043.8.498.1"
    frame_uid = "1.2.826.0.1.3680043.8.498.2"
    z = positions if positions is not None else [origin[2] + k * spacing_xyz[2] for k in range(volume.shape[0])]
    order = np.random.default_rng(0).permutation(len(z))
    for k in range(len(z)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{series_uid[-6:]}_{order[k]:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "P1", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 1, k + 1
        ds.Manufacturer = "test"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], float(z[k])]
        ds.PixelSpacing = [spacing_xyz[1], spacing_xyz[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = spacing_xyz[2]
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(volume[k].astype(np.int16)).tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)
    return series_uid


def _volume(shape=(9, 20, 24)):
    rng = np.random.default_rng(3)
    v = rng.normal(300, 40, shape)
    v[3:7, 5:15, 6:18] += 400
    return v.astype(np.int16)


def test_series_reads_with_its_geometry(tmp_path):
    v = _volume()
    write_series(tmp_path / "s", v)
    series = open_series(tmp_path / "s")
    a, g = read_case_image(Case("s", [series]))
    assert a.shape == (1, *v.shape) and np.array_equal(a[0], v.astype(np.float32))
    assert np.allclose(g.spacing, (0.8, 0.9, 2.5)) and np.allclose(g.origin, (-40, 12, 7))
    # a folder path works too
    b, _ = read_case_image(Case("s", [tmp_path / "s"]))
    assert np.array_equal(a, b)


def test_broken_series_are_refused(tmp_path):
    v = _volume()
    uid1 = write_series(tmp_path / "two", v)
    uid2 = write_series(tmp_path / "two", v, origin=(-40.0, 12.0, 100.0))
    with pytest.raises(SemisegError) as e:
        open_series(tmp_path / "two")
    assert uid1 in str(e.value) and uid2 in str(e.value) and "--series-uid" in str(e.value)
    assert open_series(tmp_path / "two", uid2).uid == uid2
    with pytest.raises(SemisegError, match="no series 1.2.3"):
        open_series(tmp_path / "two", "1.2.3")
    z = [7.0 + 2.5 * k for k in range(9)]
    write_series(tmp_path / "gap", v[:8], positions=z[:4] + z[5:])  # slice 4 missing
    with pytest.raises(SemisegError, match=r"gap.*non-uniform slice spacing.*missing slices"):
        open_series(tmp_path / "gap")
    write_series(tmp_path / "uneven", v[:3], positions=[0.0, 2.0, 5.0])
    with pytest.raises(SemisegError, match="non-uniform"):
        open_series(tmp_path / "uneven")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(SemisegError, match="no DICOM"):
        read_case_image(Case("e", [tmp_path / "empty"]))


def test_predict_dicom_series_and_dicom_seg_round_trip(run, tmp_path):
    import highdicom as hd

    v = _volume()
    studies = tmp_path / "studies"
    write_series(studies / "caseA", v)
    write_series(studies / "caseB", v[::-1].copy())
    nii = tmp_path / "nii"
    a, g = read_case_image(Case("caseA", [open_series(studies / "caseA")]))
    write_image(a[0], g, nii / "caseA_0000.nii.gz")
    # a folder of series folders: one case each; the NIfTI of the same volume predicts the same labels
    r = predict_folder([str(run)], studies, tmp_path / "out", progress=False)
    assert r["done"] == 2
    predict_folder([str(run)], nii, tmp_path / "out_nii", progress=False)
    lab, lg = read_image(tmp_path / "out" / "caseA.nii.gz")
    lab_nii, _ = read_image(tmp_path / "out_nii" / "caseA.nii.gz")
    assert np.array_equal(lab, lab_nii) and not lg.mismatch(Geometry(g.spacing, g.origin, g.direction, g.size))
    # DICOM SEG of one series folder (CLI), referencing the source series
    assert main(["predict", str(run), "-i", str(studies / "caseA"), "-o", str(tmp_path / "seg"), "-q",
                 "--output-format", "dicom-seg"]) == 0
    seg = hd.seg.segread(tmp_path / "seg" / "caseA.dcm")
    series = open_series(studies / "caseA")
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.uid
    assert [seg.get_segment_description(n).segment_label for n in seg.get_segment_numbers()] == ["a", "b"]
    mask = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in src], combine_segments=True)
    assert np.array_equal(mask, lab), "the SEG decodes to the NIfTI output's mask"
    # SEG without DICOM input: refused before anything is written
    assert main(["predict", str(run), "-i", str(nii), "-o", str(tmp_path / "seg2"), "-q",
                 "--output-format", "dicom-seg"]) == 2
    assert not (tmp_path / "seg2").exists()
