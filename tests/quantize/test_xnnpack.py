"""The ExecuTorch/XNNPACK quantizer: XNNPACK's scheme plus edgefuse's gate and reduction rules."""

import pytest
import torch

from edgefuse.errors import UsageError
from edgefuse.models import create_model
from edgefuse.quantize import QuantConfig, quantize_ptq
from tests.conftest import perturb_
from tests.quantize.test_quantize import _ListReader, _quant_nodes_after

pytest.importorskip("executorch")  # the extra is installed by `make test`; the missing-extra path is tested apart

qd = torch.ops.quantized_decomposed
XNN = QuantConfig(backend="xnnpack", activation_dtype="int8", target="xnnpack")


def test_backend_config_is_validated():
    with pytest.raises(UsageError, match="unknown quantization backend"):
        QuantConfig(backend="tflite")
    with pytest.raises(UsageError, match="signed int8"):
        QuantConfig(backend="xnnpack")  # uint8 activations are onnxruntime's x86 scheme, not XNNPACK's


def test_gates_feed_their_consumers_through_fixed_int8_qparams():
    m = perturb_(create_model("resnet", 10, fusion="se", width=0.5), std=0.05).eval()
    q = quantize_ptq(m, _ListReader([torch.randn(8, 1, 32, 32) for _ in range(2)]), XNN)
    nodes = _quant_nodes_after(q.program, torch.ops.aten.sigmoid.default)
    assert len(nodes) == 4  # one SE gate per stage
    for n in nodes:
        assert n.args[1] == pytest.approx(1 / 256) and n.args[2] == -128 and n.args[-1] == torch.int8
    # ... while everything else is XNNPACK's signed int8 with symmetric per-channel weights.
    acts = [n for n in q.program.graph.nodes if n.target == qd.quantize_per_tensor.default]
    assert acts and all(n.args[-1] == torch.int8 for n in acts)
    weights = [n for n in q.program.graph.nodes if n.target == qd.dequantize_per_channel.default]
    assert weights and all(n.args[-1] == torch.int8 for n in weights)


def test_calibrated_gates_when_asked():
    m = perturb_(create_model("resnet", 10, fusion="se", width=0.5), std=0.05).eval()
    cfg = QuantConfig(backend="xnnpack", activation_dtype="int8", fixed_gate_qparams=False)
    q = quantize_ptq(m, _ListReader([torch.randn(8, 1, 32, 32)]), cfg)
    nodes = _quant_nodes_after(q.program, torch.ops.aten.sigmoid.default)
    assert nodes and all(n.args[1] != pytest.approx(1 / 256) for n in nodes)


def test_cbam_int8_program_loads_in_executorch(tmp_path):
    """CBAM applies one channel MLP to both the mean and the max descriptor. XNNPACK's quantizer alone
    quantizes only the first conv on a shared weight, and XNNPACK then refuses the whole program at
    load time ("Failed to create convolution node")."""
    from edgefuse.export.executorch_pte import export_pte

    m = perturb_(create_model("resnet", 10, fusion="cbam", width=0.5), std=0.05).eval()
    q = quantize_ptq(m, _ListReader([torch.randn(8, 1, 32, 32) for _ in range(2)]), XNN)
    convs = [n for n in q.program.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    fp32_weight = [n.name for n in convs if n.args[1].target != qd.dequantize_per_channel.default]
    stem = [n.name for n in convs if n.args[0].op == "placeholder"]
    assert set(fp32_weight) <= set(stem), fp32_weight
    details = export_pte(q.program, torch.zeros(1, 1, 32, 32), tmp_path / "cbam.int8.pte")
    assert details["delegation"]["delegated_nodes"] > 0
    assert details["max_abs_diff_vs_pytorch"] < 0.5


def test_exclude_applies_to_xnnpack_too():
    m = perturb_(create_model("resnet", 10, fusion="se", width=0.5), std=0.05).eval()
    cfg = QuantConfig(backend="xnnpack", activation_dtype="int8", exclude=(r"^stages\.3\.0",))
    q = quantize_ptq(m, _ListReader([torch.randn(4, 1, 32, 32)]), cfg)
    from edgefuse.quantize.quantizer import module_path

    convs = [n for n in q.program.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    fp32_convs = {module_path(n) for n in convs if n.args[1].op == "get_attr"}
    assert fp32_convs and all(p.startswith("stages.3.0") for p in fp32_convs), fp32_convs


def test_pte_check_on_real_images_passes_a_faithful_file_and_refuses_outputs_of_other_images(tiny_checkpoint,
                                                                                            tmp_path):
    """The load-back check of a ``.pte`` runs real images (not a blank input, which sits on rounding ties)
    and judges their outputs together: the file's own outputs pass, the same outputs shifted by one image
    -- what a file computing something else gives at best -- do not."""
    import numpy as np

    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.data import ImageDataset, load_data
    from edgefuse.export.executorch_pte import MIN_SQNR_DB, export_pte, judge_against_program
    from edgefuse.quantize import TensorBatches
    from edgefuse.runtimes import PteModel

    # a trained model: its outputs depend on the image (a random network's barely do)
    loaded = load_checkpoint(tiny_checkpoint)
    d = load_data("digits")
    calib, test = ImageDataset(d.train, loaded.contract), ImageDataset(d.test, loaded.contract)
    q = quantize_ptq(loaded.model, TensorBatches(calib, 64, 32), XNN)
    x = torch.stack([test[i][0] for i in range(16)])
    details = export_pte(q.program, torch.zeros(1, 1, 32, 32), tmp_path / "m.int8.pte", check_inputs=x)
    assert details["check_samples"] == 16 and details["sqnr_vs_pytorch_db"] >= MIN_SQNR_DB["int8"]
    with torch.no_grad():
        ref = q.program(x).numpy()
    got = PteModel(tmp_path / "m.int8.pte").run(x.numpy())
    assert judge_against_program(ref, got, MIN_SQNR_DB["int8"])["passed"]
    other = judge_against_program(ref, np.roll(got, 1, axis=0), MIN_SQNR_DB["int8"])
    assert not other["passed"] and "SQNR" in other["reason"] and "16 image(s)" in other["reason"]
    nan = judge_against_program(ref, np.full_like(got, np.nan), MIN_SQNR_DB["int8"])
    assert not nan["passed"]
