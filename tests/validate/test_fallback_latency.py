"""The fp32 fallback's latency steps (edgefuse.validate.latency.fallback_latency) are timed on files finished
as shipped int8 files are: a raw export would time MobileNetV3's hard-swish as fp32 islands (a digits ResNet's
all-int8 step read 0.30 ms raw against 0.22 ms finished, the shipped file 0.23 ms)."""

from dataclasses import replace

import onnx
import torch

import edgefuse.validate.latency as latency
from edgefuse.data import PreprocessContract
from edgefuse.models.registry import create_model
from edgefuse.quantize.fallback import FallbackResult
from tests.conftest import quant_config_here


class _Calib:
    """``(image, label)`` pairs with the contract they were prepared by, as ``ImageDataset`` gives them."""

    def __init__(self, x: torch.Tensor, contract: PreprocessContract) -> None:
        self.x, self.contract = x, contract

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], 0


def test_fallback_steps_are_timed_on_files_finished_as_shipped(monkeypatch):
    torch.manual_seed(0)
    model = create_model("mobilenetv3", 10, act=None).eval()  # the paper's hard-swish blocks
    kept = next(name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1
                and name.startswith("blocks.3"))
    calib = _Calib(torch.randn(32, 1, 32, 32), PreprocessContract(32, 1, (0.5,), (0.25,), [str(i) for i in range(10)]))
    fb = FallbackResult("val", 1.0, 0.9, 0.5, 0.9, [kept], True)
    timed = []
    real = latency.OrtModel

    def spy(path, threads):
        timed.append([n.op_type for n in onnx.load(str(path)).graph.node])
        return real(path, threads)

    monkeypatch.setattr(latency, "OrtModel", spy)
    config = replace(quant_config_here(), calib_samples=32, calib_batch_size=16)
    out = latency.fallback_latency(model, calib, fb, config, 1, 10, {})
    assert len(timed) == 2 and [s["module"] for s in out["steps"]] == [kept]
    assert out["all_int8_ms"] > 0 and out["final_ms"] > 0
    for ops in timed:  # int8 hard-swish / hard-sigmoid, as in the shipped file: no fp32 island left
        assert "QLinearConv" in ops or "QuantizeLinear" in ops
        assert not {"HardSwish", "HardSigmoid"} & set(ops), sorted(set(ops))
