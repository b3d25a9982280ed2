"""``onnx``: ``model.{fp32,int8}.onnx`` (QDQ int8), run by onnxruntime; the contract in ``metadata_props``."""

from __future__ import annotations

from pathlib import Path

import onnx

from edgefuse._quiet import quiet
from edgefuse._versions import versions
from edgefuse.data.contract import PreprocessContract
from edgefuse.errors import ExportError, InputFileError
from edgefuse.export.formats.base import Artifact, BuildContext, Format
from edgefuse.export.channel_padding import pad_depthwise_channels
from edgefuse.export.int8_activations import int8_hard_activations
from edgefuse.export.kernel_choice import choose_fp32_prefix
from edgefuse.export.onnx import export_onnx, opset_of
from edgefuse.export.onnx_checks import (
    compact,
    reduce_mean_to_global_pool,
    restore_module_metadata,
    set_metadata,
    strip_debug_metadata,
    tile_channel_broadcasts,
    weight_summary,
)
from edgefuse.runtimes import OrtModel
from edgefuse.runtimes.sidecar import contract_metadata


def build(ctx: BuildContext) -> list[Artifact]:
    arts = []
    for precision, module in ctx.variants:
        name = f"model.{precision}.onnx"
        export_onnx(module, (ctx.example,), ctx.folder / name, input_names=[ctx.contract.input_name],
                    output_names=["logits"], dynamic_batch=ctx.dynamic_batch, opset=ctx.opset)
        details = finish_onnx(ctx.folder / name, ctx.contract, precision, ctx.simplify, ctx.notes,
                              latency_threads=ctx.latency_threads, input_shape=[1, *ctx.mobile_shape[1:]])
        arts.append(Artifact(name, "onnx", precision, details=details))
    return arts


def describe(path: Path) -> dict:
    """An ``.onnx`` or ``.ort`` file as onnxruntime sees it (shapes, contract from ``metadata_props``) and, for
    ``.onnx``, its opset and int8/fp32 weight counts. Loading a session runs no code from the file."""
    m = OrtModel(path)
    meta = m.metadata()
    info = {"format": "ONNX" if path.suffix.lower() == ".onnx" else "ONNX Runtime Mobile (ORT format)",
            "precision": meta.get("edgefuse.precision", "unknown"),
            "input shape": [d if isinstance(d, int) else str(d) for d in m.input_shape],
            "outputs": {o.name: [d if isinstance(d, int) else str(d) for d in o.shape]
                        for o in m.session.get_outputs()}}
    if "edgefuse.contract" in meta:
        info.update(PreprocessContract.from_json(meta["edgefuse.contract"]).summary())
    else:
        info["contract"] = "none (not exported by edgefuse: pass --input-size/--channels/--mean/--std)"
    if path.suffix.lower() == ".onnx":
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise InputFileError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
        info["opset"] = opset_of(model)
        w = weight_summary(model)
        info["weights"] = {"int8": w["int8_weights"], "fp32": w["float_weights"]}
    info["edgefuse"] = meta.get("edgefuse.version", "")
    return info


FORMAT = Format("onnx", "QDQ int8 for onnxruntime, dynamic batch unless --batch", build, runtime="onnxruntime",
                suffixes=(".onnx",), describe=describe)


def finish_onnx(path: Path, contract: PreprocessContract, precision: str, simplify: bool, notes: list[str], *,
                latency_threads: int | None = None, input_shape: list[int] | None = None) -> dict:
    """The passes every exported ONNX file gets (metadata, onnxsim where it keeps int8 weights, pooling, and for
    int8 the int8 activations, depthwise convs padded to 16 channels, tiled gate multiplies and, with
    ``latency_threads``, the measured fp32 prefix), then its checks."""
    model = onnx.load(str(path))
    strip_debug_metadata(model)
    details: dict = {"opset": opset_of(model)}
    before = weight_summary(model)
    if simplify:
        try:
            import onnxsim

            with quiet():
                simplified, ok = onnxsim.simplify(model)
            after = weight_summary(simplified) if ok else None
            if ok and after["int8_weights"] == before["int8_weights"] and after["float_weights"] <= before["float_weights"]:
                restore_module_metadata(model, simplified)
                model = simplified
                details["onnxsim"] = "applied"
            elif ok:
                # onnxsim constant-folds weight DequantizeLinear back to fp32 (onnxsim#216): keep the unsimplified graph.
                details["onnxsim"] = "reverted: it folded int8 weights back to fp32"
                lost = before["int8_weights"] - after["int8_weights"]
                notes.append(f"{path.name}: onnxsim result discarded (it de-quantized {lost} weights)")
            else:
                details["onnxsim"] = "skipped: simplified model failed its check"
        except Exception as e:  # onnxsim is an optimisation; never fail an export on it
            details["onnxsim"] = f"skipped: {type(e).__name__}"
    # onnxsim records its own run in metadata_props; artifacts carry only the contract.
    kept = [p for p in model.metadata_props if not p.key.startswith("onnxsim.")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    details["global_pools"] = reduce_mean_to_global_pool(model)
    moved = 0
    if precision == "int8":
        def finish(m: onnx.ModelProto) -> dict:
            # In this order: the tiled multiplies are laid out for the channel counts the padding leaves.
            return {"int8_activations": int8_hard_activations(m), "padded_depthwise": pad_depthwise_channels(m),
                    "tiled_gate_multiplies": tile_channel_broadcasts(m)}

        if latency_threads is not None and input_shape is not None:
            fp32_file = path.with_name(path.name.replace(".int8.", ".fp32."))
            fp32 = onnx.load(str(fp32_file)) if fp32_file.exists() and fp32_file != path else None
            model, choice, done = choose_fp32_prefix(model, finish, input_shape=input_shape, fp32=fp32,
                                                     threads=latency_threads)
            details["latency_precision"] = choice.to_dict()
            moved = choice.fp32_weight_nodes
        else:
            done = finish(model)
        details.update(done)
    set_metadata(model, contract_metadata(contract, precision, versions().get("edgefuse", "")))
    model.producer_name = "edgefuse"
    compact(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    summary = weight_summary(model)
    # fp32 weights are legitimate where the quantizer kept a conv wholly fp32 (stem, --exclude); what
    # must never happen is fewer int8 weights than the exporter produced (folded back to fp32).
    # (The measured fp32 prefix moves ``moved`` weights to fp32 on purpose.)
    if precision == "int8" and (summary["int8_weights"] == 0 or summary["int8_weights"] < before["int8_weights"] - moved
                                or summary["float_weights"] > before["float_weights"] + moved):
        raise ExportError(
            f"{path.name}: int8 check failed: {summary['int8_weights']} int8 and {summary['float_weights']} fp32 weight "
            f"tensors feed Conv/Gemm (exported: {before['int8_weights']} and {before['float_weights']})"
        )
    details.update({k: v for k, v in summary.items() if k != "float_weight_nodes"})
    return details
