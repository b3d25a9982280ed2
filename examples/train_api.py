"""Build a model from the Python API, train it for one epoch on the bundled digits, save it.

    .venv/bin/python examples/train_api.py [out.pt]
"""

import sys

import torch

from edgefuse.checkpoint import save_checkpoint
from edgefuse.data import PreprocessContract, load_data, norm_stats
from edgefuse.models import create_model
from edgefuse.training import TrainConfig, train


def main(out: str = "example-model.pt") -> None:
    data = load_data("digits", seed=0)
    mean, std = norm_stats(data.train, channels=1, input_size=32)
    contract = PreprocessContract(32, 1, mean, std, data.class_names)
    torch.manual_seed(0)
    model = create_model("resnet", len(data.class_names), fusion="effatt", width=0.5, input_size=32)
    result = train(model, data, contract, TrainConfig(epochs=1))
    save_checkpoint(out, model, contract, metrics=result.metrics())
    print(f"test top-1 after one epoch: {100 * result.test_accuracy:.1f}% -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
