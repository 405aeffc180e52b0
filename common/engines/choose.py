"""``pocket engines``: export, quantize, score every engine on the validation fold, record the fastest good one.

Run once per trained model, after training (like the post-processing choice). Every step goes through the
bundle's own configs: the calibration inputs are those the bundle's evaluation pipeline feeds the network on
training-fold cases, and each engine is scored by the bundle's ``evaluate.json`` on the validation fold with
``engine`` set to it. The winner is the fastest engine whose key metric (Dice; AUC for the classifier) is at most
``tolerance`` below torch fp32's; ``<ckpt_dir>/engine.json`` records it with the scores, the hash of ``model.pt``
and each engine's measured memory per voxel, and inference (``engine: "auto"``) reads it.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from common import BUNDLES_DIR
from common.engines.export import export_onnx, export_openvino
from common.engines.measure import bytes_per_voxel
from common.engines.quantize import CalibrationRecorder, quantize_openvino, quantized_operations
from common.engines.record import ENGINES, EXPORT_FILES, file_sha256, write_record
from common.engines.runtime import OnnxRuntimeNetwork, OpenVINONetwork
from common.errors import InvalidInputError, MissingInputError

__all__ = ["choose_engine", "engines"]

logger = logging.getLogger(__name__)

#: the evaluation and inference configs of each bundle variant (overlays on the bundle's base configs)
VARIANTS = {
    "": (["train.json", "evaluate.json"], ["inference.json"]),
    "slab": (["train.json", "evaluate.json", "evaluate_slab.json"], ["inference.json", "inference_slab.json"]),
    # the cascade's stage 2 (full resolution, image + stage-1 guidance, models/cascade); stage 1 sees a few per
    # cent of the voxels and stays on torch
    "cascade": (["train.json", "evaluate.json", "evaluate_cascade.json"],
                ["inference.json", "inference_cascade.json"]),
    # the BraTS 2D low-resolution overlay (models/lowres_2d): slices at the input size
    "lowres_2d": (["train.json", "train_lowres_2d.json", "evaluate_lowres_2d.json"],
                  ["inference.json", "inference_lowres_2d.json"]),
}


def resolve_bundle(bundle: str) -> Path:
    """A bundle folder, given as a path or as the name of one of the collection's bundles."""
    path = Path(bundle)
    if not path.is_dir():
        path = BUNDLES_DIR / bundle
    if not (path / "configs" / "inference.json").is_file():
        raise MissingInputError(f"{bundle} is not a bundle folder (no configs/inference.json in it).")
    return path


def _fold_data(split: str, cases: int) -> str:
    limit = f"[:{int(cases)}]" if cases else ""
    return f"$common.data.datalists.load_fold(@datalist, @dataset_dir, @fold, '{split}'){limit}"


def _evaluation(configs: list[str], bundle_root: Path, engine: str, data: str | None,
                **override: Any) -> ConfigWorkflow:
    """The bundle's evaluation workflow, reduced to what scoring needs: checkpoint loading and the key metric."""
    loader = {"_target_": "common.training.checkpoints.CheckpointLoader", "load_path": "$@ckpt_dir + '/model.pt'",
              "load_dict": {"model": "@network"}, "map_location": "@device"}
    # torch is the fp32 reference: no bf16 autocast even where the bundle's "auto" would use it. No data-loader
    # worker processes: this process holds OpenVINO/NNCF state, and forking it crashed it once (exit -11)
    override = {"engine": engine, "bf16": False, "num_workers": 0, "validate#handlers": [loader],
                "validate#evaluator#additional_metrics": {}, "validate#dataset#progress": False, **override}
    if data is not None:
        override["validate#data"] = data
    wf = ConfigWorkflow(config_file=configs, logging_file=False, workflow_type="eval", bundle_root=str(bundle_root),
                        **override)
    wf.initialize()
    return wf


def choose_engine(scores: dict[str, dict[str, float]], tolerance: float) -> str:
    """The fastest engine whose metric is at most ``tolerance`` below torch's (torch when nothing else qualifies).

    torch, the reference, always qualifies; a metric that could not be computed (NaN, e.g. an AUC on cases of
    one class) never does, so with an undefined torch metric torch stays.
    """
    floor = scores["torch"]["metric"] - tolerance
    good = ["torch"] + [e for e, s in scores.items() if e != "torch" and s["metric"] >= floor]
    return min(good, key=lambda e: scores[e]["seconds_per_case"])


def engines(
    bundle: str,
    dataset_dir: str,
    datalist: str | None = None,
    fold: int = 0,
    variant: str = "",
    bundle_root: str | None = None,
    calibration_cases: int = 8,
    calibration_samples: int = 64,
    score_cases: int = 0,
    tolerance: float = 0.005,
    cpu_threads: int | str = "auto",
    **override: Any,
) -> str:
    """Export a trained bundle's network (ONNX, OpenVINO, INT8), score each engine, record the fastest good one.

    Args:
        bundle: bundle folder or name (e.g. ``nfbs_brain_mri_segmentation``).
        dataset_dir: the dataset the model was trained on (as given to training).
        datalist: its data list (default: the bundle's).
        fold: the fold trained on (its training cases calibrate, its validation cases score).
        variant: ``""`` (the bundle's network), ``"slab"`` (the slab-wise model in ``models/slab``) or
            ``"cascade"`` (the cascade's stage 2 in ``models/cascade``, scored on stage 1's guidance) or
            ``"lowres_2d"`` (BraTS's 2D low-resolution slices in ``models/lowres_2d``).
        bundle_root: where ``models/`` is (default: the bundle folder).
        calibration_cases: training-fold cases the INT8 calibration inputs are drawn from.
        calibration_samples: calibration inputs kept (windows, slices or images, drawn at random).
        score_cases: validation cases each engine is scored on (0: the whole validation fold).
        tolerance: how far below torch fp32's metric an engine may score and still be chosen.
        cpu_threads: threads of every engine (the bundle's ``cpu_threads``).
        override: config overrides the model was trained with (``--arch``, ``--pocket``, ``--init_filters`` ...).
    """
    if variant not in VARIANTS:
        raise InvalidInputError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}.")
    bundle_dir = resolve_bundle(bundle)
    root = Path(bundle_root) if bundle_root else bundle_dir
    cfg = bundle_dir / "configs"
    eval_configs, infer_configs = ([str(cfg / f) for f in files] for files in VARIANTS[variant])
    override = {"dataset_dir": dataset_dir, "fold": fold, "cpu_threads": cpu_threads, **override}
    if datalist is not None:
        override["datalist"] = datalist

    # 1. calibration inputs: the bundle's evaluation pipeline over training cases, recorded at the network
    wf = _evaluation(eval_configs, root, "torch", _fold_data("train", calibration_cases), **override)
    ckpt_dir = Path(wf.parser.get_parsed_content("ckpt_dir"))
    ckpt = ckpt_dir / "model.pt"
    if not ckpt.is_file():
        raise MissingInputError(f"{ckpt} does not exist: train the bundle first.")
    if not_finite := non_finite_weights(ckpt):
        raise InvalidInputError(f"{ckpt} holds {not_finite} NaN or infinite weights (the training diverged): "
                                "nothing is exported.")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    torch_net = evaluator.network
    recorder = CalibrationRecorder(torch_net, max_samples=calibration_samples)
    evaluator.network = recorder
    evaluator.run()
    samples = recorder.samples
    calibration_cases = len(evaluator.data_loader.dataset)
    input_shape = list(samples[0].shape)
    output_dims = next(iter(recorder._outputs.values())).dim()
    multiple = getattr(torch_net, "multiple", None)

    # 2. exports next to the checkpoint, and the record inference checks them against
    record: dict[str, Any] = {"checkpoint": "model.pt", "model_sha256": file_sha256(ckpt), "variant": variant,
                              "multiple": list(multiple) if multiple is not None else None,
                              "input_shape": input_shape, "exports": {}, "chosen": "torch", "tolerance": tolerance,
                              "calibration": {"cases": calibration_cases, "inputs_seen": recorder.seen,
                                              "samples": len(samples)}}
    trained_with = {k: v for k, v in override.items() if k not in ("dataset_dir", "datalist", "fold", "cpu_threads")}
    onnx_file = ckpt_dir / EXPORT_FILES["onnxruntime"]
    export_onnx(infer_configs, ckpt, onnx_file, input_shape, output_dims, bundle_root=str(root), **trained_with)
    record["exports"]["onnxruntime"] = onnx_file.name
    if importlib.util.find_spec("openvino") is not None:
        xml = export_openvino(onnx_file, ckpt_dir / EXPORT_FILES["openvino"])
        record["exports"]["openvino"] = xml.name
        if importlib.util.find_spec("nncf") is not None:
            int8 = quantize_openvino(xml, samples, ckpt_dir / EXPORT_FILES["openvino_int8"])
            record["exports"]["openvino_int8"] = int8.name
            record["int8_convolutions"] = quantized_operations(int8)
    available = ["torch"] + [e for e in ENGINES[1:] if e in record["exports"]]

    # 3. memory per input voxel (3D networks seen through sliding windows: what decides whole-volume passes)
    torch_net.eval()  # the evaluator's eval_mode restored training mode after its run
    if len(input_shape) == 5 and multiple is not None and not variant:
        side = min(input_shape[2:])
        sides = [max(multiple), side] if side // 2 < max(multiple) else [side // 2, side]
        nets = {"torch": torch_net, **{e: _engine_net(e, ckpt_dir, cpu_threads) for e in available[1:]}}
        record["bytes_per_voxel"] = {e: round(bytes_per_voxel(n, input_shape[1], sides), 1) for e, n in nets.items()}
        del nets
    write_record(ckpt_dir, record)

    # 4. every engine scored by the bundle's evaluation on the same validation cases
    scores: dict[str, dict[str, float]] = {}
    for engine in available:
        wf = _evaluation(eval_configs, root, engine, _fold_data("val", score_cases) if score_cases else None,
                         **override)
        metric = next(iter(wf.parser["validate#key_metric"]))
        evaluator = wf.parser.get_parsed_content("validate#evaluator")
        cases = len(evaluator.data_loader.dataset)
        start = time.perf_counter()
        evaluator.run()
        seconds = time.perf_counter() - start
        scores[engine] = {"metric": float(evaluator.state.metrics[metric]), "seconds_per_case": seconds / cases}
        record["metric"], record["cases_scored"] = metric, cases
    record["scores"] = scores
    record["chosen"] = choose_engine(scores, tolerance)
    write_record(ckpt_dir, record)
    return render(record, ckpt_dir)


def non_finite_weights(ckpt: Path) -> int:
    """Number of NaN/inf values in a checkpoint's floating-point tensors (``{key: state_dict}`` or a state dict)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    return sum(int((~torch.isfinite(v)).sum()) for v in state.values()
               if isinstance(v, torch.Tensor) and v.is_floating_point())


def _engine_net(engine: str, ckpt_dir: Path, cpu_threads: int | str) -> Any:
    path = ckpt_dir / EXPORT_FILES[engine]
    if engine == "onnxruntime":
        return OnnxRuntimeNetwork(path, cpu_threads)
    return OpenVINONetwork(path, cpu_threads, int8=engine == "openvino_int8")


def render(record: dict[str, Any], ckpt_dir: Path) -> str:
    """The command's table: one row per engine, the chosen one marked."""
    metric = record.get("metric", "metric")
    per_voxel = record.get("bytes_per_voxel", {})
    lines = [f"engines of {ckpt_dir / record['checkpoint']} ({record.get('cases_scored', 0)} validation cases; "
             f"INT8 calibrated on {record['calibration']['samples']} inputs from "
             f"{record['calibration']['cases']} training cases)", "",
             f"| engine | {metric} | vs torch | s/case | bytes/voxel | chosen |", "|---|---|---|---|---|---|"]
    base = record["scores"]["torch"]["metric"]
    for engine, s in record["scores"].items():
        bpv = f"{per_voxel[engine]:.0f}" if engine in per_voxel else "-"
        mark = "yes" if engine == record["chosen"] else ""
        lines.append(f"| {engine} | {s['metric']:.4f} | {s['metric'] - base:+.4f} | {s['seconds_per_case']:.2f} | "
                     f"{bpv} | {mark} |")
    if "int8_convolutions" in record:
        c = record["int8_convolutions"]
        lines.append(f"\nINT8 model: {c['int8']} convolutions run in int8, {c['float']} in floating point.")
    lines.append(f"recorded in {ckpt_dir / 'engine.json'}: inference with engine 'auto' uses {record['chosen']}.")
    return "\n".join(lines)
