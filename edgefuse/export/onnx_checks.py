"""Post-export checks of ONNX files: int8 weights really int8, metadata, clean-up."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

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
                    # cumulative paths: ['', 'stages', 'stages.0', ..., 'stages.0.0.fusion', 'add_40']
                    module = scopes[-2] if len(scopes) >= 2 else ""
                except ValueError:
                    module = ""
        del n.metadata_props[:]
        n.doc_string = ""
        if module:
            n.metadata_props.add(key="module", value=module)
    _label_qdq(model)
    for f in model.functions:
        for n in f.node:
            del n.metadata_props[:]
    model.doc_string = ""


def _consumers(graph: onnx.GraphProto) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Tensor name -> its dimensions from ONNX shape inference (``None`` for a symbolic one)."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {}
    for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return shapes


def node_attr(node: onnx.NodeProto, name: str, default=None):
    """The value of a node's attribute ``name``, or ``default`` when the node does not set it."""
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def module_of(node: onnx.NodeProto) -> str | None:
    """The source module path edgefuse keeps on a node (its ``module`` metadata key), or None."""
    return next((p.value for p in node.metadata_props if p.key == "module"), None)


def _label_qdq(model: onnx.ModelProto) -> None:
    """Quantize/Dequantize nodes are exported outside any module: charge a QuantizeLinear to the module
    that produced its input and a DequantizeLinear to the module that reads its output."""
    mod = module_of
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = _consumers(model.graph)
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and mod(n) is None:
            found = next((m for c in consumers.get(n.output[0], []) if (m := mod(c))), None)
            if found:
                n.metadata_props.add(key="module", value=found)
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and mod(n) is None:
            p = producers.get(n.input[0])
            found = mod(p) if p is not None else None
            if not found:  # quantizing the network input or a weight: charge it to the reader
                found = next((m for d in consumers.get(n.output[0], []) for c in consumers.get(d.output[0], [d])
                              if (m := mod(c))), None)
            if found:
                n.metadata_props.add(key="module", value=found)


def restore_module_metadata(source: onnx.ModelProto, rebuilt: onnx.ModelProto) -> int:
    """Copy the ``module`` key of every node of ``source`` onto the same node of ``rebuilt`` (matched by
    name, else by output tensor), which onnxsim drops when it rebuilds the graph. Returns nodes labelled."""
    by_name, by_output = {}, {}
    for n in source.graph.node:
        mod = module_of(n)
        if mod:
            by_name[n.name] = mod
            for o in n.output:
                by_output[o] = mod
    labelled = 0
    for n in rebuilt.graph.node:
        if module_of(n) is not None:
            continue
        mod = by_name.get(n.name) or next((by_output[o] for o in n.output if o in by_output), None)
        if mod:
            n.metadata_props.add(key="module", value=mod)
            labelled += 1
    return labelled


def _read_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name the graph's outputs and nodes read, control-flow subgraphs included (they read
    outer values by name)."""
    used = {o.name for o in graph.output}

    def visit(g: onnx.GraphProto) -> None:
        for n in g.node:
            used.update(n.input)
            for attr in n.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub)

    visit(graph)
    return used


def _is_read(node: onnx.NodeProto, used: set[str]) -> bool:
    return any(o in used for o in node.output if o)


def unread_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes none of whose outputs is read by a node, a subgraph or a graph output."""
    used = _read_names(graph)
    return [n for n in graph.node if not _is_read(n, used)]


def drop_dead_nodes(graph: onnx.GraphProto) -> int:
    """Remove :func:`unread_nodes` until none is left (a chain goes from its end); returns how many went.

    onnxruntime does not remove them: it runs them, and in an int8 graph wraps each in its own NHWC
    Transpose. A rewrite that gives a node a new input (the int8 hard-sigmoid's own DequantizeLinear)
    leaves the old producer unread.
    """
    dropped = 0
    while True:
        used = _read_names(graph)
        kept = [n for n in graph.node if _is_read(n, used)]
        if len(kept) == len(graph.node):
            return dropped
        dropped += len(graph.node) - len(kept)
        del graph.node[:]
        graph.node.extend(kept)


def compact(model: onnx.ModelProto) -> None:
    """Drop what runtimes recompute or never read: intermediate shapes (``value_info``, re-added by
    onnxsim), nodes whose outputs nothing reads, and unused initializers.

    Zero points stay even where they are all zero: without them onnxruntime does not fuse a
    DequantizeLinear -> Gemm pair into QGemm (measured; Conv fuses either way).
    """
    del model.graph.value_info[:]
    drop_dead_nodes(model.graph)
    # Rewrites (ReduceMean -> GlobalAveragePool) orphan their axes constants; drop initializers no node reads.
    used = _read_names(model.graph)
    kept = [t for t in model.graph.initializer if t.name in used]
    if len(kept) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for k, v in props.items():
        if k in existing:
            existing[k].value = v
        else:
            model.metadata_props.add(key=k, value=v)


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def reduce_axes(node, inits: dict, consts: dict | None = None) -> list[int] | None:
    """A Reduce* node's axes: its attribute (before opset 18) or its constant second input (an initializer or a
    ``Constant`` node, from opset 18); None when they are not constant."""
    for a in node.attribute:
        if a.name == "axes":
            return [int(v) for v in helper.get_attribute_value(a)]
    if len(node.input) > 1 and node.input[1]:
        src = inits.get(node.input[1])
        if src is None and consts and node.input[1] in consts:
            src = consts[node.input[1]].attribute[0].t
        if src is not None:
            return [int(v) for v in numpy_helper.to_array(src).reshape(-1)]
    return None


def reduce_mean_to_global_pool(model: onnx.ModelProto) -> int:
    """Rewrite ``ReduceMean`` over the spatial axes of NCHW maps as ``GlobalAveragePool``.

    The dynamo exporter lowers ``x.mean((2, 3))`` and ``adaptive_avg_pool2d(x, 1)`` to ReduceMean,
    which onnxruntime has no int8 kernel for (each one costs a DequantizeLinear/QuantizeLinear pair
    of the full map in an int8 model); GlobalAveragePool fuses into QLinearGlobalAveragePool.
    ``keepdims=0`` becomes GlobalAveragePool + Flatten. Returns the number of nodes rewritten.
    """
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    ranks = {name: len(dims) for name, dims in _inferred_shapes(model).items()}
    consumers = _consumers(model.graph)
    new_nodes, count = [], 0
    for n in model.graph.node:
        if n.op_type != "ReduceMean":
            new_nodes.append(n)
            continue
        axes = reduce_axes(n, inits, consts)
        rank = ranks.get(n.input[0])
        if rank != 4 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            new_nodes.append(n)
            continue
        keep = node_attr(n, "keepdims", 1)
        if keep:
            new_nodes.append(helper.make_node("GlobalAveragePool", [n.input[0]], [n.output[0]], name=n.name))
        else:
            mid = n.output[0] + "_gap"
            new_nodes.append(helper.make_node("GlobalAveragePool", [n.input[0]], [mid], name=n.name))
            q = consumers.get(n.output[0], [])
            if len(q) == 1 and q[0].op_type == "QuantizeLinear":
                # Keep DQ -> GlobalAveragePool -> Q adjacent (so it fuses into QLinearGlobalAveragePool) by
                # re-quantizing with the consumer's own parameters before the Flatten; onnxruntime drops
                # the DQ -> Flatten -> Q pair that this leaves, as it does for every reshape.
                qmid, dqmid = mid + "_q", mid + "_dq"
                new_nodes.append(helper.make_node("QuantizeLinear", [mid, *q[0].input[1:]], [qmid], name=n.name + "_q"))
                new_nodes.append(helper.make_node("DequantizeLinear", [qmid, *q[0].input[1:]], [dqmid], name=n.name + "_dq"))
                mid = dqmid
            new_nodes.append(helper.make_node("Flatten", [mid], [n.output[0]], name=n.name + "_flatten", axis=1))
        for p in n.metadata_props:
            new_nodes[-1].metadata_props.add(key=p.key, value=p.value)
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return count


def tile_channel_broadcasts(model: onnx.ModelProto, min_span: int = 256, min_pixels: int = 1024) -> int:
    """Rewrite int8 per-channel gate multiplies ``x (N,C,H,W) * g (N,C,1,1)`` so onnxruntime's
    QLinearMul runs over long spans.

    onnxruntime runs int8 convolutions in NHWC, where a (N,C,1,1) gate broadcasts along the innermost
    axis: QLinearMul then makes one kernel call per pixel over only C values (3,136 calls of 16 values
    for an EfficientAttention gate on a 56x56x16 map: 0.10 ms, 3-4x the fp32 multiply). Viewed
    as ``(N, H*W/k, k*C)`` with the gate tiled k times, the same multiply is k times fewer, longer
    calls. The view is written as Transpose(0,2,3,1) + Reshape on the quantized tensors, which
    onnxruntime's layout optimiser cancels against its own NHWC transposes; results are bit-identical.
    Applies to Mul nodes between DequantizeLinear inputs (per-tensor) and one QuantizeLinear, with static
    C, H, W and at least ``min_pixels`` pixels (on smaller maps the view's own reshapes cost about what
    it saves). Returns the number rewritten.
    """
    shapes = _inferred_shapes(model)
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = _consumers(model.graph)

    def per_tensor(qdq) -> bool:
        s = inits.get(qdq.input[1])
        return s is not None and numpy_helper.to_array(s).size == 1

    replaced: dict[int, list] = {}
    count = 0
    for n in model.graph.node:
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        dqs = [producer.get(i) for i in n.input]
        users = consumers.get(n.output[0], [])
        if (any(d is None or d.op_type != "DequantizeLinear" or not per_tensor(d) for d in dqs)
                or len(users) != 1 or users[0].op_type != "QuantizeLinear" or not per_tensor(users[0])
                or n.output[0] in {o.name for o in model.graph.output}):
            continue
        sh = [shapes.get(i) for i in n.input]
        if any(s is None or len(s) != 4 for s in sh):
            continue
        big = 0 if sh[0][2:] != [1, 1] else 1
        c, h, w = sh[big][1:]
        if None in (c, h, w) or sh[1 - big][1:] != [c, 1, 1] or h * w < min_pixels:
            continue
        k = 1
        while k * c < min_span and (h * w) % (2 * k) == 0:
            k *= 2
        if k == 1:
            continue
        q, dx, dg = users[0], dqs[big], dqs[1 - big]
        src = producer.get(dx.input[0])
        src = producer.get(src.input[0]) if src is not None and src.op_type == "QuantizeLinear" else src
        if src is not None and src.op_type == "Concat":
            # onnxruntime runs QLinearConcat in NCHW, where this multiply is already per-channel scalar
            # spans: forcing NHWC there measured 10% slower (resnet/se at 32x32).
            continue
        p = f"{n.name or n.output[0]}_tiled"
        for name, value in (("x3", [-1, h * w // k, k * c]), ("g3", [-1, 1, c]), ("reps", [1, 1, k]),
                            ("y4", [-1, h, w, c])):
            model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), f"{p}_{name}"))
        nodes = [
            helper.make_node("Transpose", [dx.input[0]], [f"{p}_xt"], name=f"{p}_xt", perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"{p}_xt", f"{p}_x3"], [f"{p}_xr"], name=f"{p}_xr"),
            helper.make_node("DequantizeLinear", [f"{p}_xr", *dx.input[1:]], [f"{p}_xd"], name=f"{p}_xd"),
            helper.make_node("Reshape", [dg.input[0], f"{p}_g3"], [f"{p}_gr"], name=f"{p}_gr"),
            helper.make_node("Tile", [f"{p}_gr", f"{p}_reps"], [f"{p}_gt"], name=f"{p}_gt"),
            helper.make_node("DequantizeLinear", [f"{p}_gt", *dg.input[1:]], [f"{p}_gd"], name=f"{p}_gd"),
            helper.make_node("Mul", [f"{p}_xd", f"{p}_gd"], [f"{p}_m"], name=n.name),
            helper.make_node("QuantizeLinear", [f"{p}_m", *q.input[1:]], [f"{p}_mq"], name=q.name),
            helper.make_node("Reshape", [f"{p}_mq", f"{p}_y4"], [f"{p}_yr"], name=f"{p}_yr"),
            helper.make_node("Transpose", [f"{p}_yr"], [q.output[0]], name=f"{p}_yt", perm=[0, 3, 1, 2]),
        ]
        for new in nodes:
            for prop in n.metadata_props:
                new.metadata_props.add(key=prop.key, value=prop.value)
        replaced[id(n)], replaced[id(q)] = nodes, []
        count += 1
    if count:
        new_nodes = [m for n in model.graph.node for m in replaced.get(id(n), [n])]
        # The original DequantizeLinear nodes may now feed nothing.
        while True:
            read = {i for n in new_nodes for i in n.input} | {o.name for o in model.graph.output}
            kept = [n for n in new_nodes if n.op_type != "DequantizeLinear" or n.output[0] in read]
            if len(kept) == len(new_nodes):
                break
            new_nodes = kept
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return count
