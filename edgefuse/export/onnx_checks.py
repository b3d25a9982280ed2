"""Post-export checks of ONNX files: int8 weights really int8, metadata, clean-up."""

from __future__ import annotations

import json

import onnx

WEIGHT_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1, "ConvTranspose": 1}


def weight_summary(model: onnx.ModelProto) -> dict:
    """Count how the weights of Conv/Gemm/MatMul nodes are stored.

    Returns:
        ``{"int8_weights": n, "float_weights": m, "float_weight_nodes": [...]}``: a weight is int8 when
        it reaches its node through a DequantizeLinear of an 8-bit initializer; float when the node
        reads an fp32 initializer directly (what onnxsim's constant folding produces).
    """
    inits = {t.name: t for t in model.graph.initializer}
    const_out = {}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    const_out[n.output[0]] = a.t
    producers = {o: n for n in model.graph.node for o in n.output}
    int8 = floats = 0
    float_nodes = []
    eight_bit = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    for n in model.graph.node:
        idx = WEIGHT_OPS.get(n.op_type)
        if idx is None or len(n.input) <= idx:
            continue
        w = n.input[idx]
        src = producers.get(w)
        if src is not None and src.op_type == "DequantizeLinear":
            t = inits.get(src.input[0]) or const_out.get(src.input[0])
            if t is not None and t.data_type in eight_bit:
                int8 += 1
                continue
        t = inits.get(w) or const_out.get(w)
        if t is not None and t.data_type == onnx.TensorProto.FLOAT:
            floats += 1
            float_nodes.append(n.name)
    return {"int8_weights": int8, "float_weights": floats, "float_weight_nodes": float_nodes}


def strip_debug_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node stack traces (local paths, ~half the file) but keep each node's
    source module path as ``module`` so diagnostics can name it."""
    for n in model.graph.node:
        module = ""
        for p in n.metadata_props:
            if p.key == "pkg.torch.onnx.name_scopes":
                try:
                    scopes = json.loads(p.value.replace("'", '"'))
                    module = ".".join(s for s in scopes[1:-1] if s)
                except ValueError:
                    module = ""
        del n.metadata_props[:]
        n.doc_string = ""
        if module:
            n.metadata_props.add(key="module", value=module)
    for f in model.functions:
        for n in f.node:
            del n.metadata_props[:]
    model.doc_string = ""


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for k, v in props.items():
        if k in existing:
            existing[k].value = v
        else:
            model.metadata_props.add(key=k, value=v)


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
