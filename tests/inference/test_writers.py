"""Predictions appear under their name only when complete; an interrupted write leaves nothing behind."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import SaveImage

from common.inference.writers import AtomicNibabelWriter


def mask() -> MetaTensor:
    image = MetaTensor(torch.zeros(1, 6, 5, 4), affine=torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])))
    image[0, 1:3] = 1
    image.meta["filename_or_obj"] = "case.nii.gz"
    return image


def test_writes_the_same_file_as_monai(tmp_path) -> None:
    SaveImage(output_dir=str(tmp_path), output_postfix="seg", separate_folder=False, output_dtype=np.uint8,
              writer=AtomicNibabelWriter)(mask())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_seg.nii.gz"]
    data = nib.load(tmp_path / "case_seg.nii.gz")
    assert data.shape == (6, 5, 4) and np.asarray(data.dataobj)[1:3].all() and data.affine[0, 0] == 2.0


def test_an_interrupted_write_leaves_no_file(tmp_path, monkeypatch) -> None:
    def fail_half_way(img, filename):
        with open(filename, "wb") as f:
            f.write(b"\x1f\x8b half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(nib, "save", fail_half_way)
    with pytest.raises(RuntimeError):
        SaveImage(output_dir=str(tmp_path), output_postfix="seg", separate_folder=False,
                  writer=AtomicNibabelWriter)(mask())
    assert list(tmp_path.iterdir()) == []
