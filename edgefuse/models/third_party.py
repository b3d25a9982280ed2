"""Networks users bring: torchvision's and timm's SE / hard-swish / attention CNNs, and a hand-written one.

The matrix edgefuse's tests and ``benchmarks/third_party.py`` run through ``export --int8``, so the
quantizer and the exporter are held to graphs as other libraries write them, not only to the zoo.
torchvision and timm are optional (the ``thirdparty`` extra, pinned); no weights are loaded: the
networks are built with random weights, and :func:`calibrate_batch_norm` gives them batch-norm
statistics from real images (random-init statistics make every activation range meaningless).

torchvision 0.28 on the CPU build of torch 2.13: its import registers fake kernels for its compiled ops
(``torchvision::nms`` ...), which fails with ``operator torchvision::nms does not exist`` when the wheel's
compiled library does not match this torch build. Model definitions need none of those ops, so
:func:`import_torchvision` skips the registrations (``torch.library.register_fake`` is a no-op decorator
for the duration of the import). Detection ops (nms, roi_align) stay unusable; classification
networks build and run.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from edgefuse._registry import Registry
from edgefuse.errors import MissingExtraError

_MATRIX: Registry[nn.Module] = Registry("third-party model")


@contextlib.contextmanager
def _no_fake_kernels():
    original = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: (lambda fn: fn)
    try:
        yield
    finally:
        torch.library.register_fake = original


def import_torchvision():
    """``import torchvision`` on builds where its fake-kernel registrations fail (see the module docstring)."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    try:
        with _no_fake_kernels():
            return importlib.import_module("torchvision")
    except ImportError as e:
        raise MissingExtraError(f"torchvision is not installed ({e}); pip install 'edgefuse[thirdparty]'") from None


def _timm():
    try:
        import_torchvision()  # timm imports torchvision when it is installed
    except MissingExtraError:
        pass
    try:
        return importlib.import_module("timm")
    except ImportError as e:
        raise MissingExtraError(f"timm is not installed ({e}); pip install 'edgefuse[thirdparty]'") from None


def _tv(arch: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        return getattr(import_torchvision().models, arch)(num_classes=num_classes)

    return build


def _tm(arch: str, **kwargs) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        return _timm().create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)

    return build


class UserSE(nn.Module):
    """Squeeze-and-Excitation as blog posts write it: AdaptiveAvgPool2d + view, two nn.Linear, in-place ReLU."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        return x * self.fc(self.pool(x).view(b, c)).view(b, c, 1, 1)


class UserCBAM(nn.Module):
    """CBAM as the paper's reference code writes it: AdaptiveMaxPool2d(1) in the channel branch, a shared
    MLP, ``torch.max(x, dim=1)`` and ``torch.mean`` in the spatial branch."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.avg, self.max = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels // reduction, channels, 1, bias=False))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        x = x * torch.sigmoid(self.mlp(self.avg(x)) + self.mlp(self.max(x)))
        mx, _ = torch.max(x, dim=1, keepdim=True)
        return x * torch.sigmoid(self.spatial(torch.cat([torch.mean(x, dim=1, keepdim=True), mx], dim=1)))


class UserNet(nn.Module):
    """A small classifier written by hand after the SE and CBAM papers (``x.mean((2, 3))`` head)."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 32) -> None:
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.stem = block(in_chans, width, 2)
        self.stage1 = nn.Sequential(block(width, width, 1), UserSE(width))
        self.stage2 = nn.Sequential(block(width, 2 * width, 2), UserCBAM(2 * width))
        # Not in place: the block's in-place ReLU needs its output for the backward pass, so an in-place
        # Hardswish after it made the network untrainable (autograd's version-counter error).
        self.stage3 = nn.Sequential(block(2 * width, 4 * width, 2), nn.Hardswish(), UserSE(4 * width))
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(F.dropout(x.mean((2, 3)), 0.2, self.training))


_ENTRIES: dict[str, Callable[[int], nn.Module]] = {
    "tv_mobilenet_v3_small": _tv("mobilenet_v3_small"),
    "tv_mobilenet_v3_large": _tv("mobilenet_v3_large"),
    "tv_efficientnet_b0": _tv("efficientnet_b0"),
    "timm_mobilenetv3_large_100": _tm("mobilenetv3_large_100"),
    "timm_mobilenetv3_small_100": _tm("mobilenetv3_small_100"),
    "timm_efficientnet_b0": _tm("efficientnet_b0"),
    "timm_seresnet18": _tm("seresnet18"),
    "timm_cbam_resnet18": _tm("resnet18", block_args=dict(attn_layer="cbam")),
    "timm_eca_resnet18": _tm("resnet18", block_args=dict(attn_layer="eca")),
    "timm_regnety_002": _tm("regnety_002"),
    "timm_lcnet_050": _tm("lcnet_050"),
    "user_se_cbam": lambda n: UserNet(n),
}
for _name, _fn in _ENTRIES.items():
    _MATRIX.register(_name)(_fn)


def list_third_party() -> list[str]:
    """Names of the third-party matrix."""
    return _MATRIX.names()


def create_third_party(name: str, num_classes: int) -> nn.Module:
    """Build a matrix network with random weights (nothing is downloaded).

    Raises:
        UnknownNameError: not a matrix name.
        MissingExtraError: torchvision or timm is not installed.
    """
    return _MATRIX.get(name)(num_classes)


@torch.no_grad()
def calibrate_batch_norm(model: nn.Module, batches) -> nn.Module:
    """Give a random-init network batch-norm statistics from real inputs, then put it in eval mode.

    Train-mode forward passes with each network's own momentum (as a few steps of training would):
    running statistics blend the initial (0, 1) with the data's. Replacing them with the data's exact
    variance instead makes every channel the random weights left nearly dead (variance ~ 0) a gain of up
    to 1/sqrt(eps) ~ 300x on its quantization noise, which trained networks avoid with small BN gains:
    then int8 logits of timm's MobileNetV3/EfficientNet were noise for every quantizer (onnxruntime's
    quantize_static -3 to -10 dB against fp32 at 224x224), and nothing could be learnt from them.
    """
    model.train()
    for x in batches:
        model(x)
    return model.eval()
