import os

import pytest
import torch

os.environ.setdefault("EDGEFUSE_DEBUG", "0")
# Under pytest-xdist (`make test` runs two workers, one per core) each worker gets one thread; alone, two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

# Markers by what a test needs, so `make test-fast` (-m "not slow") stays within two minutes on two cores:
# fixtures that train for seconds-to-minutes or export full sets, and files whose every test trains, exports
# at size, kills subprocesses or starts torchrun.
_SLOW_FIXTURES = {"trained_checkpoint", "exported", "pristine_set", "previous_set"}
_SLOW_FILES = {"test_distributed.py", "test_examples.py", "test_interrupted.py", "test_relative_paths.py",
               "test_mobile.py", "test_studies.py", "test_analysis.py", "test_matrix_timm.py",
               "test_matrix_torchvision.py", "test_cli.py", "test_doctor.py", "test_xnnpack.py"}
_EXECUTORCH_FILES = {"test_mobile.py", "test_xnnpack.py"}
_E2E_FILES = {"test_cli.py", "test_interrupted.py", "test_distributed.py", "test_examples.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        if name in _SLOW_FILES or _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if name in _EXECUTORCH_FILES or "pte" in item.name:
            item.add_marker(pytest.mark.executorch)
        if name in _E2E_FILES:
            item.add_marker(pytest.mark.e2e)


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


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """The demo's resnet/effatt (default width), trained on digits for 8 epochs: accuracy-budget tests."""
    from edgefuse.api import train_model

    out = tmp_path_factory.mktemp("trained") / "model.pt"
    res = train_model(model="resnet", fusion="effatt", data="digits", out=out, epochs=8)
    assert res["test_top1"] > 0.95, res
    return out


@pytest.fixture(scope="session")
def exported(trained_checkpoint, tmp_path_factory):
    """`export --int8` of the trained checkpoint through the library API (PTQ, ONNX + TorchScript)."""
    from edgefuse.api import export_model
    from edgefuse.validate import Budgets

    out = tmp_path_factory.mktemp("build")
    # latency-aware precision off: its choice follows this machine's timings (two xdist workers share two
    # cores), and the tests on this build check weights, sizes and reports, not that choice
    # (tests/export/test_kernel_choice.py does)
    res = export_model(trained_checkpoint, out, int8=True, calib="digits", runs=30, latency_search=False,
                       budgets=Budgets(max_drop=None, max_latency_ratio=None))
    return res


def quant_config_here():
    """The int8 flavour of this machine's CPU, as `export` picks it: for tests that run int8 files in this
    machine's onnxruntime (x86 without VNNI takes 7-bit weights; full-range ones saturate its u8 x s8 pair
    sums there, and the file stops computing its program)."""
    from edgefuse.quantize.targets import quant_config_for

    return quant_config_for()


def damage_int8_onnx(src, dst, seed=0):
    """Write a copy of an int8 ONNX whose int8 weights are replaced by noise (a broken quantization)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for t in m.graph.initializer:
        if t.data_type == onnx.TensorProto.INT8:
            a = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(rng.integers(-127, 128, a.shape).astype(np.int8), t.name))
    onnx.save(m, str(dst))
    return dst
