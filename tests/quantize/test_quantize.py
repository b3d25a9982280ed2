import pytest
import torch

from edgefuse.checkpoint import load_checkpoint
from edgefuse.data import ImageDataset, load_data
from edgefuse.errors import DataError, UsageError
from edgefuse.models import create_model
from edgefuse.quantize import CALIBRATION_METHODS, QATConfig, QuantConfig, TensorBatches, quantize_ptq, quantize_qat
from edgefuse.training import evaluate
from tests.conftest import perturb_

qd = torch.ops.quantized_decomposed


def _digits(contract):
    d = load_data("digits")
    return ImageDataset(d.train, contract), ImageDataset(d.test, contract)


def _quant_nodes_after(program, op):
    out = []
    for n in program.graph.nodes:
        if n.target == op:
            for u in n.users:
                if u.target == qd.quantize_per_tensor.default:
                    out.append(u)
    return out


def test_ptq_keeps_accuracy_within_budget(trained_checkpoint):
    lm = load_checkpoint(trained_checkpoint)
    train, test = _digits(lm.contract)
    q = quantize_ptq(lm.model, TensorBatches(train, 300))
    fp32, int8 = evaluate(lm.model, test), evaluate(q.program, test)
    assert q.calib_samples == 300 and q.method == "ptq"
    assert fp32 - int8 <= 0.005 + 1e-9, (fp32, int8)


def test_gate_outputs_get_fixed_qparams():
    m = perturb_(create_model("resnet", 10, fusion="effatt", width=0.5), std=0.05).eval()
    calib = [torch.randn(8, 1, 32, 32) for _ in range(2)]
    q = quantize_ptq(m, _ListReader(calib))
    nodes = _quant_nodes_after(q.program, torch.ops.aten.sigmoid.default)
    assert len(nodes) == 4  # one gate per stage
    for n in nodes:
        assert n.args[1] == pytest.approx(2 / 511) and n.args[2] == 0


def test_gate_qparams_can_be_calibrated_instead():
    m = perturb_(create_model("resnet", 10, fusion="se", width=0.5), std=0.05).eval()
    q = quantize_ptq(m, _ListReader([torch.randn(8, 1, 32, 32)]), QuantConfig(fixed_gate_qparams=False))
    nodes = _quant_nodes_after(q.program, torch.ops.aten.sigmoid.default)
    assert nodes and all(n.args[1] != pytest.approx(2 / 511) for n in nodes)


def test_weights_are_per_channel_int8_with_int32_bias():
    m = perturb_(create_model("mobilenetv3", 10, width=0.5), std=0.02).eval()
    q = quantize_ptq(m, _ListReader([torch.randn(4, 1, 32, 32)]))
    deq_pc = [n for n in q.program.graph.nodes if n.target == qd.dequantize_per_channel.default]
    dtypes = {n.args[-1] for n in deq_pc}
    assert torch.int8 in dtypes and torch.int32 in dtypes  # weights and biases
    convs = [n for n in q.program.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    stem = [c for c in convs if c.args[0].op == "placeholder"]
    assert len(stem) == 1 and stem[0].args[1].op == "get_attr"  # the stem over pixels stays fp32
    rest = [c for c in convs if c not in stem]
    assert rest and all(c.args[1].target == qd.dequantize_per_channel.default for c in rest)


@pytest.mark.parametrize("method", CALIBRATION_METHODS)
def test_every_calibration_method_keeps_accuracy(method, trained_checkpoint):
    lm = load_checkpoint(trained_checkpoint)
    train, test = _digits(lm.contract)
    q = quantize_ptq(lm.model, TensorBatches(train, 128), QuantConfig(calibration=method))
    assert evaluate(lm.model, test) - evaluate(q.program, test) <= 0.02


def test_exclude_keeps_module_in_fp32():
    m = perturb_(create_model("resnet", 10, fusion="effatt", width=0.5), std=0.05).eval()
    q = quantize_ptq(m, _ListReader([torch.randn(4, 1, 32, 32)]), QuantConfig(exclude=(r"^stages\.3\.0\.fusion",)))
    sig = [n for n in q.program.graph.nodes if n.target == torch.ops.aten.sigmoid.default]
    quantized = [n for n in sig if any(u.target == qd.quantize_per_tensor.default for u in n.users)]
    assert len(sig) == 4 and len(quantized) == 3


def test_invalid_configs():
    with pytest.raises(UsageError, match="histogram"):
        QuantConfig(calibration="entropy")
    with pytest.raises(UsageError, match="exclude"):
        QuantConfig(exclude=("([",))
    with pytest.raises(UsageError):
        QATConfig(epochs=0)
    with pytest.raises(UsageError, match="at least one epoch"):
        QATConfig(freeze_observer_epoch=0)


def test_calibration_set_too_small_and_nan():
    with pytest.raises(DataError, match="calib-samples"):
        TensorBatches([torch.zeros(1, 8, 8)] * 5, samples=10)
    reader = TensorBatches([(torch.full((1, 8, 8), float("nan")), 0)] * 4, samples=4)
    with pytest.raises(DataError, match="NaN"):
        reader.get_next()


def test_qat_runs_and_agrees_with_fp32(trained_checkpoint):
    lm = load_checkpoint(trained_checkpoint)
    train, test = _digits(lm.contract)
    q = quantize_qat(lm.model, train, qat=QATConfig(epochs=2, freeze_observer_epoch=1))
    assert q.method == "qat" and [h["observers_frozen"] for h in q.history] == [False, True]
    assert all(h["bn_frozen"] for h in q.history)
    fp32, int8 = evaluate(lm.model, test), evaluate(q.program, test)
    assert fp32 - int8 <= 0.01, (fp32, int8)
    # the fp32 model itself is untouched
    assert evaluate(lm.model, test) == fp32


class _ListReader:
    def __init__(self, batches):
        self.batches = list(batches)

    def get_next(self):
        return self.batches.pop(0) if self.batches else None


def test_mode_switches_keep_batch_norm_eps_and_reach_every_mode_op(tmp_path):
    """torchvision's BatchNorm2d(eps=1e-3) with dead channels (running_var ~ 0): a mode switch that resets
    eps to 1e-5 changes the network by orders of magnitude; ours flips only the training literal."""
    from edgefuse.api import load_model_source
    from edgefuse.quantize.pt2e import _freeze_bn, capture, set_exported_mode

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4, eps=1e-3), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Dropout(0.3, inplace=True), torch.nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        m[1].running_var.copy_(torch.tensor([1e-6, 1.0, 1e-6, 2.0]))
    m.eval()
    x = torch.randn(5, 1, 8, 8)
    ref = m(x)
    ep = torch.export.export(m, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "m.pt2")
    module, _, _ = load_model_source(tmp_path / "m.pt2", input_size=8, channels=1)
    module.eval()
    torch.testing.assert_close(module(x), ref)
    module.train()  # (no forward here: one in train mode would update the running statistics)
    assert module.training
    assert [n.args[5] for n in module.graph.nodes if n.target == torch.ops.aten.batch_norm.default] == [True]
    module.eval()
    torch.testing.assert_close(module(x), ref)
    eps = [n.args[7] for n in module.graph.nodes if n.target == torch.ops.aten.batch_norm.default]
    assert eps == [1e-3]

    m.train()
    gm = capture(m, x[:1])
    assert set_exported_mode(gm, True) == 0  # captured in train mode already
    _freeze_bn(gm)  # QAT's late-epoch freeze reaches torch 2.13's aten.batch_norm (it was a no-op)
    modes = {str(n.target): n.args[5 if "batch_norm" in str(n.target) else 2] for n in gm.graph.nodes
             if "batch_norm" in str(n.target) or "dropout" in str(n.target)}
    assert modes == {"aten.batch_norm.default": False, "aten.dropout_.default": True}, modes


def test_small_activations_keep_their_resolution():
    """Activations far below 1 (random-init torchvision MobileNetV3: 1e-4 at the logits) are quantized with
    their own range: a 2**-12 scale floor once rounded them all to zero (0 dB against fp32)."""
    from edgefuse.quantize import TensorBatches, quantize_ptq
    from edgefuse.metrics import sqnr_db

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 6 * 6, 10)).eval()
    with torch.no_grad():
        m[0].bias.zero_()
        m[3].bias.zero_()
    data = [(torch.randn(1, 8, 8) * 1e-3, 0) for _ in range(64)]  # every activation ~1e-3
    q = quantize_ptq(m, TensorBatches(data, 64))
    x = torch.stack([d[0] for d in data])
    with torch.no_grad():
        ref, got = m(x), q.program(x)
    assert float(ref.abs().max()) < 0.01
    assert sqnr_db(ref.numpy(), got.numpy()) > 25
