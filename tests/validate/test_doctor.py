"""Structural tests that pin the int8 recipe (no timing): what onnxruntime runs after optimisation."""

import pytest
import torch

from edgefuse.data import ImageDataset, PreprocessContract, load_data
from edgefuse.export import export_artifacts
from edgefuse.models import create_model
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.quantize.targets import TARGETS, detect_target, get_target
from edgefuse.errors import UsageError
from edgefuse.validate.doctor import diagnose

# Upper bounds on QuantizeLinear + DequantizeLinear nodes left after onnxruntime's fusion (32x32 input),
# as measured with this recipe. Add/SE models and MobileNetV3 (ReLU by default; its paper hard-swish had
# 40) keep only the network's input Q and output DQ; the rest is by design: EfficientAttention's MLP on
# its (B, C, 1, 1) gate tensor (GroupNorm, the gain multiply and the 1 - a subtraction have no int8
# kernels) and CBAM's channel-wise mean for its spatial attention. CBAM's shared channel MLP gets one
# weight/bias copy per use (unshare_params): with one shared int32 bias, quantized for the first use's
# input scale, onnxruntime left the second use an fp32 conv on de-quantized weights (18 Q/DQ then).
QDQ_BOUNDS = {
    ("resnet", "add"): 2,
    ("resnet", "se"): 2,
    ("resnet", "effatt"): 34,
    ("resnet", "cbam"): 10,
    ("fpn", "effatt"): 29,
    ("mobilenetv3", "add"): 2,
}


@pytest.fixture(scope="module")
def digits32():
    d = load_data("digits")
    c = PreprocessContract(32, 1, [0.306], [0.324], d.class_names)
    return c, ImageDataset(d.train, c)


# CBAM's spatial attention reads the channel-wise mean (ReduceMean over C, no int8 kernel), one per block.
CHANNEL_MEANS = {("resnet", "cbam"): 4}


@pytest.mark.parametrize("name,fusion", sorted(QDQ_BOUNDS))
def test_int8_graph_structure(name, fusion, digits32, tmp_path):
    contract, calib = digits32
    torch.manual_seed(0)
    model = create_model(name, 10, fusion=fusion).eval()
    q = quantize_ptq(model, TensorBatches(calib, 32, 16))
    res = export_artifacts(model, contract, tmp_path, quantized=q, formats=("onnx",))
    rep = diagnose(res.path("onnx", "int8"), runs=3)
    dq_convs = [f for f in rep.findings if f.kind.startswith("fp32 conv on de-quantized")]
    assert not dq_convs, [f.node for f in dq_convs]
    assert rep.qdq_ops <= QDQ_BOUNDS[(name, fusion)], rep.op_counts
    assert rep.op_counts.get("QLinearConv", 0) >= 3
    # spatial means are pooled with QLinearGlobalAveragePool instead
    assert rep.op_counts.get("ReduceMean", 0) == CHANNEL_MEANS.get((name, fusion), 0), rep.op_counts
    for f in rep.findings:  # a mean over channels gets its own advice, not the H x W pooling fix
        if f.kind == "fp32 island: ReduceMean":
            assert "averages over channels" in f.advice and "GlobalAveragePool does not apply" in f.advice


def test_doctor_explains_onnxruntime_quantizer_slowdown(digits32, tmp_path):
    """A user's path today: dynamo ONNX export, then onnxruntime's quantize_static. doctor must name the
    fp32 islands that keep that int8 model slow, and the fix for each."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgefuse.export import export_onnx

    contract, calib = digits32
    torch.manual_seed(0)
    model = create_model("mobilenetv3", 10, act=None).eval()  # the paper's hard-swish, as users have it
    fp32 = export_onnx(model, (torch.zeros(1, 1, 32, 32),), tmp_path / "fp32.onnx")
    xs = [calib[i][0][None].numpy() for i in range(16)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(xs)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    ort_int8 = tmp_path / "ort.int8.onnx"
    quantize_static(str(fp32), str(ort_int8), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    rep = diagnose(ort_int8, runs=3)
    kinds = {f.kind: f for f in rep.findings}
    assert "GlobalAveragePool" in kinds["fp32 island: ReduceMean"].advice  # SE squeeze: the fix is named
    advice = kinds["fp32 island: HardSigmoid"].advice  # hard-swish: what edgefuse does itself comes first
    assert advice.index("edgefuse export --int8") < advice.index("act='relu'")
    summary = rep.summary()
    assert "fp32 island: ReduceMean" in summary and "Quantize/Dequantize" in summary


def test_targets():
    assert detect_target({"avx512_vnni", "avx2"}, "x86_64").name == "x86-vnni"
    assert detect_target({"avx2"}, "x86_64").reduce_range is True
    assert detect_target(set(), "aarch64").activation_dtype == "int8"
    assert get_target("arm64") is TARGETS["arm64"]
    with pytest.raises(UsageError, match="x86-avx2"):
        get_target("riscv")


def test_xnnpack_preset_keeps_the_recipe_in_xnnpack_int8():
    from edgefuse.quantize.targets import quant_config_for, xnnpack_preset

    base = quant_config_for("x86-avx2", calibration="minmax", calib_samples=64, exclude=("layer1",))
    x = xnnpack_preset(base)
    assert (x.backend, x.activation_dtype, x.reduce_range, x.target) == ("xnnpack", "int8", False, "xnnpack")
    assert (x.calibration, x.calib_samples, x.exclude) == ("minmax", 64, ("layer1",))


def test_reduce_range_gives_7bit_weights():
    from edgefuse.quantize import QuantConfig

    torch.manual_seed(0)
    m = create_model("resnet", 10, width=0.5).eval()
    q = quantize_ptq(m, _Once(torch.randn(4, 1, 32, 32)), QuantConfig(reduce_range=True))
    qd = torch.ops.quantized_decomposed
    mins = {n.args[4] for n in q.program.graph.nodes
            if n.target == qd.dequantize_per_channel.default and n.args[-1] == torch.int8}
    assert mins == {-63}


def test_the_library_default_is_this_cpus_int8_flavour(monkeypatch):
    # quantize_ptq without a config quantizes as `export` does here: on x86 without VNNI, 7-bit weights (a
    # full-range file saturates onnxruntime's u8 x s8 pair sums there and its gate refuses it)
    import edgefuse.quantize.targets as targets

    torch.manual_seed(0)
    m = create_model("resnet", 10, width=0.5).eval()
    for flags, want in (({"avx2"}, "x86-avx2"), ({"avx512_vnni", "avx2"}, "x86-vnni")):
        monkeypatch.setattr(targets, "detect_target", lambda f=flags: detect_target(f, "x86_64"))
        q = quantize_ptq(m, _Once(torch.randn(4, 1, 32, 32)))
        assert (q.config.target, q.config.reduce_range) == (want, want == "x86-avx2")


class _Once:
    def __init__(self, x):
        self.x = x

    def get_next(self):
        x, self.x = self.x, None
        return x


def test_shipped_int8_onnx_keeps_module_names_through_onnxsim(exported):
    """onnxsim rebuilds nodes without their metadata; the export restores each node's source module so
    `edgefuse doctor` can name the module behind a slow node."""
    import onnx

    path = exported.export.path("onnx", "int8")
    m = onnx.load(str(path))
    mods = {p.value for n in m.graph.node for p in n.metadata_props if p.key == "module"}
    assert any(v.startswith("stages.") for v in mods) and "head" in mods
    labelled = [n for n in m.graph.node if n.op_type in ("Conv", "QuantizeLinear", "DequantizeLinear")
                and any(p.key == "module" for p in n.metadata_props)]
    assert len(labelled) >= 0.8 * sum(n.op_type in ("Conv", "QuantizeLinear", "DequantizeLinear") for n in m.graph.node)
    rep = diagnose(path, runs=5)
    assert any(f.module.startswith("stages.") for f in rep.findings)


def test_doctor_reads_relative_paths_and_leaves_the_working_directory_alone(tmp_path, monkeypatch):
    """Relative paths, as the README writes them (`edgefuse doctor build/model.int8.onnx`), from another folder."""
    import os

    from edgefuse.export import export_onnx

    (tmp_path / "build").mkdir()
    export_onnx(create_model("resnet", 10, width=0.5).eval(), (torch.zeros(1, 1, 16, 16),),
                tmp_path / "build" / "m.onnx")
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    report = diagnose("build/m.onnx", runs=2)
    assert report.summary() and os.getcwd() == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == before  # no profile file left in the working directory
