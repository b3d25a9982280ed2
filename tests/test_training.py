import json

import pytest
import torch

from edgefuse.data import PreprocessContract, load_data
from edgefuse.errors import UsageError
from edgefuse.models import create_model
from edgefuse.training import GateMonitor, TrainConfig, count_macs, param_groups, train


def test_attention_params_get_the_lower_learning_rate():
    m = create_model("resnet", 10, fusion="se")
    groups = param_groups(m, TrainConfig(lr=1e-2, attention_lr_scale=0.1))
    by_name = {g["name"]: g for g in groups}
    assert by_name["attention"]["lr"] == pytest.approx(1e-3)
    assert by_name["base"]["lr"] == pytest.approx(1e-2)
    assert by_name["base/no_decay"]["weight_decay"] == 0.0
    n_attn = sum(p.numel() for g in groups if g["name"].startswith("attention") for p in g["params"])
    n_se = sum(p.numel() for n, p in m.named_parameters() if ".fusion." in n)
    assert n_attn == n_se > 0


def test_invalid_config():
    with pytest.raises(UsageError):
        TrainConfig(epochs=0)
    with pytest.raises(UsageError):
        TrainConfig(lr=-1)


def test_short_training_learns_and_logs_gates(tmp_path):
    data = load_data("digits")
    c = PreprocessContract(16, 1, [0.3], [0.3], data.class_names)
    torch.manual_seed(0)
    m = create_model("resnet", 10, fusion="effatt", width=0.5, input_size=16)
    log = tmp_path / "gates.jsonl"
    res = train(m, data, c, TrainConfig(epochs=2), log_path=log)
    assert res.test_accuracy > 0.3  # chance is 0.1
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    gates = recs[-1]["gates"]
    assert len(gates) == 4  # one EfficientAttention gate per stage
    for s in gates.values():
        assert 0 <= s["mean"] <= 1 and sum(s["hist"]) > 0


def test_gate_monitor_sees_all_gates():
    m = create_model("mobilenetv3", 10).eval()
    with GateMonitor(m) as mon:
        m(torch.randn(2, 1, 32, 32))
    stats = mon.stats()
    assert len(stats) == 9  # SE in 9 of the 11 blocks
    assert all(abs(s["mean"] - 0.5) < 1e-6 for s in stats.values())  # fresh SE gates are exactly 0.5


class _HandWrittenSE(torch.nn.Module):
    """SE as blog posts write it (Hu et al., 2018): nn.Sigmoid as the gate, as torchvision/timm do too."""

    def __init__(self, c=8):
        super().__init__()
        self.fc = torch.nn.Sequential(torch.nn.Linear(c, c // 4), torch.nn.ReLU(), torch.nn.Linear(c // 4, c))
        self.sigmoid = torch.nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc(x.mean((2, 3)))).view(x.shape[0], -1, 1, 1)


def test_gate_monitor_finds_a_users_sigmoid_and_hardsigmoid_gates():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), _HandWrittenSE(), torch.nn.Conv2d(8, 8, 1),
                              torch.nn.Hardsigmoid(), torch.nn.ReLU())
    with GateMonitor(net) as mon:
        net(torch.randn(4, 1, 8, 8))
    stats = mon.stats()
    assert set(stats) == {"1.sigmoid", "3"}  # the ReLU is not a gate
    assert stats["1.sigmoid"]["std"] > 0 and sum(stats["1.sigmoid"]["hist"]) == 4 * 8


def test_macs_count_convs():
    m = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
    assert count_macs(m, (1, 1, 8, 8)) == 4 * 9 * 64
