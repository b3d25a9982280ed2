import os

import pytest
import torch

os.environ.setdefault("EDGEFUSE_DEBUG", "0")
torch.set_num_threads(2)


def perturb_(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Move every parameter off its (zero) initialisation so gradients and exports are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def onnx_max_diff(module, inputs, tmp_path, batch_for_check=3):
    """Export with a dynamic batch, run in onnxruntime at another batch size, return max |diff|."""
    import onnxruntime as ort

    from edgefuse.export import export_onnx

    path = export_onnx(module, inputs, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    new = [torch.randn((batch_for_check, *t.shape[1:]), generator=g) for t in inputs]
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), new)}
    got = sess.run(None, feeds)[0]
    with torch.no_grad():
        ref = module(*new).numpy()
    assert got.shape == ref.shape
    return float(abs(got - ref).max())


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A quickly trained resnet/effatt on digits (2 epochs, half width): real weights, real data."""
    from edgefuse.api import train_model

    out = tmp_path_factory.mktemp("ckpt") / "model.pt"
    train_model(model="resnet", fusion="effatt", data="digits", out=out, epochs=2, width=0.5)
    return out
