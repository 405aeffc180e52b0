"""Model-zoo conventions every bundle must follow: files, metadata schema, keys, shapes, TorchScript export."""

from __future__ import annotations

import json
import re

import pytest
import torch
from bundle_helpers import SCHEMA, all_bundles, bundle_dir
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from common.networks import count_parameters

BUNDLES = all_bundles()
REQUIRED = ["configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/inference.json",
            "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md", "LICENSE"]


def test_the_collection_has_its_bundles():
    """All five, so that no bundle drops out of the parametrized convention tests unnoticed."""
    assert BUNDLES == ["brats_tumor_mri_segmentation", "covidx_cxr_classification", "lits_liver_ct_segmentation",
                       "nfbs_brain_mri_segmentation", "prostate_mri_segmentation"]


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
    parser["pocket"] = not parser.get_parsed_content("pocket")
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


# ------------------------------------------------------------------------------- what the bundles share
# The bundles are self-contained (model-zoo style): what they have in common is copied into each. These tests
# keep the copies equal. What one bundle adds on purpose is listed here, by bundle and key; anything else that
# differs fails. LiTS refuses to train or infer on placeholder intensity statistics (common.data.fingerprint).
PICTURES = "$common.metrics.classification_pictures.write_classification_pictures(@eval_dir + '/predictions.csv')"
SPECIFIC = {"lits_liver_ct_segmentation": {"initialize": ["$common.data.fingerprint.check(@fingerprint)"]},
            # a classification evaluation draws its ROC curve and confusion matrix from predictions.csv
            "covidx_cxr_classification": {"evaluate.json:run": [PICTURES]}}
SHARED = {
    "train.json": ["initialize", "run", "finalize", "training", "train#handlers", "train#log_handlers",
                   "train#trainer#train_handlers", "train#resume_handlers", "train#save_handlers"],
    "evaluate.json": ["initialize", "run", "finalize", "evaluating"],
    "inference.json": ["initialize", "run", "finalize", "inferring"],
}
# Each overlay and the config stacks it is merged onto (configs/<name> after these files).
OVERLAY_BASES = {
    "multi_gpu_train.json": [["train.json"]],
    "evaluate.json": [["train.json"]],
    "regions.json": [["train.json"], ["train.json", "evaluate.json"], ["inference.json"]],
    "train_slab.json": [["train.json"]],
    "train_cpu.json": [["train.json"]],
    "train_cpu_head.json": [["train.json", "train_cpu.json"]],
    "train_cascade_stage1.json": [["train.json"]],
    "train_cascade_stage2.json": [["train.json"]],
    "train_cascade_stage2_predicted.json": [["train.json", "train_cascade_stage2.json"]],
    "evaluate_slab.json": [["train.json", "evaluate.json"]],
    "evaluate_cascade.json": [["train.json", "evaluate.json"]],
    "inference_slab.json": [["inference.json"]],
    "inference_cascade.json": [["inference.json"]],
    "train_short.json": [["train.json"]],
    "inference_short.json": [["inference.json"]],
    "train_short_2d.json": [["train.json"]],
    "inference_short_2d.json": [["inference.json"]],
    "train_lowres_2d.json": [["train.json"]],
    "evaluate_lowres_2d.json": [["train.json", "train_lowres_2d.json"]],
    "inference_lowres_2d.json": [["inference.json"]],
}
# Nested ids an overlay may add; every other nested id it sets must replace one of its base, so that renaming
# a key in train.json cannot leave an overlay silently setting a key nothing reads.
NEW_NESTED = {
    "multi_gpu_train.json": {"train#sampler", "train#dataloader#sampler", "validate#sampler",
                             "validate#dataloader#sampler"},
    "evaluate.json": {"validate#additional_metrics", "validate#evaluator#additional_metrics",
                      "validate#strategy_transforms"},
    "train_short_2d.json": {"train#augmentation#slice"},
    "train_lowres_2d.json": {"train#augmentation#slice", "train#augmentation#affine_2d",
                             "train#augmentation#resize_image", "train#augmentation#resize_label"},
}


def _raw(bundle: str, config: str, key: str):
    """The unparsed value ``config`` gives ``key`` (``a#b`` looks into ``a``; an overlay's own ``a#b`` counts)."""
    value = json.loads((bundle_dir(bundle) / "configs" / config).read_text())
    if key in value:
        return value[key]
    for part in key.split("#"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _without_specific(bundle: str, key: str, value, config: str | None = None):
    """``value`` less what SPECIFIC lists for ``bundle`` and ``key`` (or ``<config>:<key>``), which must all be
    there."""
    extras = SPECIFIC.get(bundle, {}).get(f"{config}:{key}", SPECIFIC.get(bundle, {}).get(key, []))
    if not extras or value is None:
        return value
    missing = [e for e in extras if e not in value]
    assert not missing, f"SPECIFIC lists {missing} for {bundle} {key}, which its config no longer has"
    return [v for v in value if v not in extras]


def _assert_same(values: dict[str, object], what: str) -> None:
    groups: dict[str, list[str]] = {}
    for bundle, value in values.items():
        groups.setdefault(json.dumps(value, sort_keys=True, indent=1), []).append(bundle)
    assert len(groups) == 1, f"{what} differs across bundles:\n" + "\n".join(
        f"--- {', '.join(names)}:\n{value}" for value, names in groups.items())


@pytest.mark.parametrize("config,key", [(c, k) for c, keys in SHARED.items() for k in keys])
def test_shared_sections_are_equal_across_bundles(config, key):
    """The initialize/run/finalize pattern, the trainer's handlers and the resume handlers are one design."""
    values = {b: _without_specific(b, key, _raw(b, config, key), config) for b in BUNDLES}
    if key in ("run", "training", "evaluating", "inferring", "train#handlers", "train#resume_handlers"):
        assert all(v is not None for v in values.values()), f"{config} {key} missing: {values}"
    _assert_same(values, f"{config} {key}")


def test_multi_gpu_configs_are_one_file():
    """multi_gpu_train.json is the same file in every bundle, but for the SPECIFIC additions."""
    configs = {b: json.loads((bundle_dir(b) / "configs" / "multi_gpu_train.json").read_text()) for b in BUNDLES}
    for key in sorted(set().union(*configs.values())):
        _assert_same({b: _without_specific(b, key, c.get(key)) for b, c in configs.items()},
                     f"multi_gpu_train.json {key}")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_multi_gpu_initialize_is_process_group_setup_then_the_train_initialize(bundle):
    multi = _raw(bundle, "multi_gpu_train.json", "initialize")
    single = _raw(bundle, "train.json", "initialize")
    assert multi[-len(single):] == single, (multi, single)
    assert any("init_process_group" in step for step in multi[: -len(single)])


def test_logging_conf_is_byte_equal_across_bundles():
    _assert_same({b: (bundle_dir(b) / "configs" / "logging.conf").read_text() for b in BUNDLES}, "logging.conf")
    assert len({(bundle_dir(b) / "configs" / "logging.conf").read_bytes() for b in BUNDLES}) == 1  # line ends too


def _overlays(bundle: str) -> list[str]:
    names = sorted(p.name for p in (bundle_dir(bundle) / "configs").glob("*.json"))
    return [n for n in names if not n.startswith("metadata") and n not in ("train.json", "inference.json")]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_overlays_address_keys_that_exist(bundle):
    """Every nested id an overlay sets replaces one of its base stack (or is listed in NEW_NESTED), and every
    ``@id`` it refers to exists once merged: a renamed key cannot leave an overlay silently doing nothing."""
    d = bundle_dir(bundle) / "configs"
    for name in _overlays(bundle):
        assert name in OVERLAY_BASES, f"{bundle}/{name}: add it to OVERLAY_BASES with the stacks it is merged onto"
        overlay = json.loads((d / name).read_text())
        for base in OVERLAY_BASES[name]:
            parser = ConfigParser()
            parser.read_config([str(d / f) for f in base])
            added = {k.lstrip("+") for k in overlay if "#" in k and k.lstrip("+") not in parser}
            unexpected = sorted(added - NEW_NESTED.get(name, set()))
            assert not unexpected, f"{bundle}/{name} on {base} sets {unexpected}, which its base does not have"
            parser.read_config([str(d / f) for f in [*base, name]])
            refs = set(re.findall(r"@([A-Za-z_][\w#]*)", json.dumps(overlay)))
            unknown = sorted(r for r in refs if r not in parser)
            assert not unknown, f"{bundle}/{name} on {base} refers to {unknown}"
