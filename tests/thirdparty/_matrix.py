"""The third-party matrix at the suite's size (64x64): correctness only, never timing.

The full form (224x224, latency, wall times) is ``benchmarks/third_party.py``; both call its ``measure``.
"""

import pytest

from edgefuse.errors import MissingExtraError  # noqa: E402
from edgefuse.models.third_party import _timm, import_torchvision  # noqa: E402

try:  # the thirdparty extra (make installs it); through edgefuse's import, which CPU torch builds need
    import_torchvision()
    _timm()
except MissingExtraError as e:
    pytest.skip(str(e), allow_module_level=True)

from benchmarks.third_party import measure  # noqa: E402

SIZE = 64
#: fp32 weight tensors feeding Conv/Gemm that stay in the int8 file: the 3-channel stem everywhere (it reads
#: the fp32 input), and ECA's 1-D channel conv in each of timm's 8 ECA blocks (no int8 Conv1d form yet).
FP32_WEIGHTS = {"timm_eca_resnet18": 9}
#: depthwise convs whose channels are not a multiple of 16 (72, 88, 120, 184, 200): all widened to 16-channel
#: blocks in an all-int8 file (edgefuse.export.channel_padding); a measured fp32 prefix may hold some of them.
PADDED = {"tv_mobilenet_v3_large": 7, "timm_mobilenetv3_large_100": 7, "tv_mobilenet_v3_small": 3,
          "timm_mobilenetv3_small_100": 3}


def check(name, tmp_path, formats=("onnx",)):
    r = measure(name, SIZE, tmp_path, formats=formats)
    assert r["artifact_agreement"]["model.fp32.onnx"] == 1.0, r
    assert r["fp32_files_agree"] == 1.0, r
    # fp32 weights only where expected: the stem, and the prefix latency-aware precision measured faster in fp32
    moved = (r["latency_precision"] or {}).get("fp32_weight_nodes", 0)
    assert r["weights"]["float_weights"] <= FP32_WEIGHTS.get(name, 1) + moved, r
    assert r["weights"]["int8_weights"] + moved >= 12 and r["weights"]["int8_weights"] >= 1, r
    chosen = (r["latency_precision"] or {}).get("chosen", "all int8")
    want = PADDED.get(name, 0)
    assert r["padded_depthwise"] == want if chosen == "all int8" else r["padded_depthwise"] <= want, r
    # never worse than onnxruntime's own quantizer by more than 3 dB on the same model and images
    assert r["sqnr_edgefuse_db"] >= r["sqnr_ort_db"] - 3.0, r
    assert set(r["unread_nodes"].values()) == {0}, r  # no rewrite leaves work onnxruntime would still run
    if r["sqnr_ort_db"] >= 10.0:
        # a well-conditioned network at this size: the int8 file computes its PyTorch program
        assert r["edgefuse_vs_program"] >= 0.99, r
        assert min(r["artifact_agreement"].values()) >= 0.99, r  # every format's file, fp32 and int8
    else:
        # random-init depthwise networks at 64x64: any int8 build is mostly noise (onnxruntime's too); the
        # default gate must refuse it without labels (its SQNR floor, or the file-vs-program floor), not ship it
        assert any("--min-sqnr" in f or "--min-artifact-agreement" in f for f in r["gate_failures"]), r
    return r
