"""Model-zoo conventions every bundle must follow: files, metadata schema, keys, shapes, TorchScript export."""

from __future__ import annotations

import json

import pytest
import torch
from bundle_helpers import SCHEMA, all_bundles, bundle_dir
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from common.networks import count_parameters

BUNDLES = all_bundles()
REQUIRED = ["configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/inference.json",
            "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md", "LICENSE"]


def test_the_collection_has_its_bundles():
    assert "nfbs_brain_mri_segmentation" in BUNDLES


@pytest.mark.parametrize("bundle", BUNDLES)
def test_layout_and_name(bundle):
    assert bundle.endswith(("_segmentation", "_classification"))
    for rel in REQUIRED:
        assert (bundle_dir(bundle) / rel).is_file(), f"{bundle} lacks {rel}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_validates_against_the_offline_schema(bundle):
    verify_metadata(meta_file=str(bundle_dir(bundle) / "configs" / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((bundle_dir(bundle) / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert list(meta["network_data_format"]["inputs"]) == ["image"]
    assert list(meta["network_data_format"]["outputs"]) == ["pred"]


def test_schema_rejects_incomplete_metadata(tmp_path):
    meta = json.loads((bundle_dir(BUNDLES[0]) / "configs" / "metadata.json").read_text())
    del meta["task"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'task' is a required property"):
        verify_metadata(meta_file=str(bad), filepath=str(SCHEMA))


def _parser(bundle: str, config: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle_dir(bundle) / "configs" / config))
    parser["bundle_root"] = str(bundle_dir(bundle))
    return parser


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
@pytest.mark.parametrize("bundle", BUNDLES)
def test_standard_keys(bundle, config):
    parser = _parser(bundle, config)
    for key in ("bundle_root", "device", "network_def", "network", "imports", "run"):
        assert key in parser, f"{bundle}/{config} lacks {key}"
    assert str(parser.get_parsed_content("device")) in ("cpu", "cuda:0")
    if config == "train.json":
        for key in ("arch", "pocket", "train#trainer#max_epochs", "train#dataset#data", "train#handlers",
                    "validate#dataset#data", "validate#evaluator", "val_interval", "dataset_dir"):
            assert key in parser, f"{bundle}/{config} lacks {key}"
        assert parser.get("training") == parser.get("run")  # `run training` works as in model-zoo


@pytest.mark.parametrize("bundle", BUNDLES)
def test_arch_and_pocket_switch_the_network(bundle):
    parser = _parser(bundle, "inference.json")
    pocket = count_parameters(parser.get_parsed_content("network_def", instantiate=True))
    parser["pocket"] = not parser["pocket"]
    other = count_parameters(parser.get_parsed_content("network_def", instantiate=True, lazy=False))
    assert other != pocket
    assert max(other, pocket) > 10 * min(other, pocket)  # PocketNet: 10-100x fewer parameters


@pytest.mark.parametrize("bundle", BUNDLES)
def test_net_in_out_matches_metadata(bundle):
    d = bundle_dir(bundle)
    verify_net_in_out(
        net_id="network_def", meta_file=str(d / "configs" / "metadata.json"),
        config_file=str(d / "configs" / "inference.json"), bundle_root=str(d), device="cpu",
    )


@pytest.mark.parametrize("bundle", BUNDLES)
def test_torchscript_export_and_reload(bundle, tmp_path):
    d = bundle_dir(bundle)
    net = _parser(bundle, "inference.json").get_parsed_content("network_def")
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)  # fake weights, as model-zoo CI does
    out = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def", filepath=str(out), ckpt_file=str(ckpt), meta_file=str(d / "configs" / "metadata.json"),
        config_file=str(d / "configs" / "inference.json"), bundle_root=str(d),
    )
    loaded = torch.jit.load(str(out))
    meta = json.loads((d / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    shape = [int(s.split("*")[0]) if isinstance(s, str) else s for s in meta["spatial_shape"]]
    x = torch.randn(1, meta["num_channels"], *shape)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
