"""The collection's AsDiscreted gives MONAI's result (values, dtype, metadata) with a faster channel argmax."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted as MonaiAsDiscreted

from common.inference.discrete import AsDiscrete, AsDiscreted


@pytest.mark.parametrize("kwargs", [{"argmax": True}, {"argmax": True, "to_onehot": 3}, {"threshold": 0.5},
                                    {"argmax": [True, False], "to_onehot": 3}])
def test_same_result_as_monai(kwargs: dict) -> None:
    g = torch.Generator().manual_seed(0)
    pred = MetaTensor(torch.randn(3, 9, 8, 7, generator=g), affine=torch.diag(torch.tensor([2.0, 1.0, 3.0, 1.0])))
    pred.meta["filename_or_obj"] = "case.nii.gz"
    label = MetaTensor(torch.randint(0, 3, (1, 9, 8, 7), generator=g).float())
    keys = ["pred", "label"] if isinstance(kwargs.get("argmax"), list) else ["pred"]
    data = {"pred": pred, "label": label}
    ours, monai = AsDiscreted(keys, **kwargs)(data), MonaiAsDiscreted(keys, **kwargs)(data)
    for key in keys:
        assert isinstance(ours[key], MetaTensor) and ours[key].dtype == monai[key].dtype
        torch.testing.assert_close(ours[key].as_tensor(), monai[key].as_tensor(), rtol=0, atol=0)
        torch.testing.assert_close(ours[key].affine, monai[key].affine)
        assert ours[key].meta.get("filename_or_obj") == monai[key].meta.get("filename_or_obj")


def test_argmax_on_a_plain_tensor_and_keepdim() -> None:
    x = torch.randn(4, 5, 6)
    torch.testing.assert_close(AsDiscrete(argmax=True)(x), torch.argmax(x, 0, keepdim=True).float())
    assert AsDiscrete(argmax=True, keepdim=False)(x).shape == (5, 6)
