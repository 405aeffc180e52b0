"""The header every DICOM file written here starts from: look-alike radiographs and series, as a scanner exports.

Kept apart from the readers: writing DICOM is only needed to make test data in the real formats.
"""

from __future__ import annotations

from typing import Any

__all__ = ["new_dicom"]


def new_dicom(sop_class_uid: str, modality: str) -> Any:
    """A ``pydicom`` dataset with its file meta (explicit VR little endian), fresh SOP instance UID and modality."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    return ds
