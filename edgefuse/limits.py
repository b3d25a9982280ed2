"""Bounds edgefuse applies to what it runs and what users pass, in one place (imports nothing)."""

#: The largest batch that the symbolic batch dimension of captured programs and exported ONNX files covers.
MAX_BATCH = 4096
#: ONNX opsets ``--opset`` accepts: the dynamo exporter writes 18 and onnx's version converter cannot lower
#: it reliably (no Shape adapter below 15, ReduceMean's axes input breaks at 17); 24 is the newest
#: onnxruntime 1.32 loads.
MIN_OPSET, MAX_OPSET = 18, 24
