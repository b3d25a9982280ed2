"""Bounds edgefuse applies to what it runs and what users pass, in one place (imports nothing)."""

#: The largest batch that the symbolic batch dimension of captured programs and exported ONNX files covers.
MAX_BATCH = 4096
