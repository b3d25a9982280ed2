"""The attention training recipe's two tips, measured on Fashion-MNIST instead of asserted.

    sudo apt-get install dataset-fashion-mnist      # once: the data, from Debian (nothing is downloaded here)
    .venv/bin/python benchmarks/training_tips.py [--fusion effatt] [--seeds 0,1] [--json out.json]

The tips (common in write-ups of SE/CBAM-style fusion training):

* **zero-init**: the last layer of every attention branch starts at zero, so a fresh gate is exactly 0.5 and
  the block starts as a fixed average of its inputs (edgefuse's blocks do this);
  the alternative is PyTorch's default (Kaiming-uniform) init of that layer;
* **attention LR scale**: the attention parameters train at 0.1-0.2x the base learning rate (edgefuse's default
  0.2); the alternative is 1.0 (one learning rate for everything).

Each of the four combinations is trained with the same data, budget and seed (``--seeds`` repeats the whole
grid), then top-1 on the 10,000 official test images. Each variant is compared with the recipe
(zero-init, 0.2) of the same seed: the difference of top-1 with its paired 95 % bootstrap interval (the same
resampled test images for both models). Gate health is reported from the last epoch's validation pass: the
smallest gate standard deviation and the gates flagged collapsed (std < 0.01: a constant, no attention).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from accuracy import training_data  # benchmarks/ is the script's folder

from edgefuse.data import ImageDataset, PreprocessContract, norm_stats
from edgefuse.models import create_model
from edgefuse.training import TrainConfig, gate_flags, predict, train
from edgefuse.validate import cpu_name
from edgefuse.validate.stats import bootstrap_drop_ci

GRID = [("zero", 0.2), ("zero", 1.0), ("default", 0.2), ("default", 1.0)]


def default_init_(model: nn.Module) -> int:
    """Give every zero-initialised conv (the blocks' last attention layers) PyTorch's default init instead.

    Returns how many layers were re-initialised (a check that the grid's two inits really differ).
    """
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not m.weight.detach().any():
            m.reset_parameters()
            n += 1
    return n


def run(fusion: str, init: str, scale: float, seed: int, data, contract, args) -> tuple[dict, np.ndarray]:
    torch.manual_seed(seed)
    model = create_model("resnet", 10, fusion=fusion, input_size=32, width=args.width)
    reset = default_init_(model) if init == "default" else 0
    if init == "default" and not reset:
        raise SystemExit(f"{fusion}: no zero-initialised layer found; the init comparison would be empty")
    t0 = time.perf_counter()
    res = train(model, data, contract, TrainConfig(epochs=args.epochs, attention_lr_scale=scale, seed=seed))
    train_s = time.perf_counter() - t0
    preds, labels = predict(model, ImageDataset(data.test, contract))
    right = preds == labels
    gates = res.history[-1]["gates"]
    flags = gate_flags(gates)
    return ({"fusion": fusion, "init": init, "attention_lr_scale": scale, "seed": seed, "reinitialised": reset,
             "top1": float(right.mean()), "val_top1": res.val_accuracy, "train_s": round(train_s, 1),
             "min_gate_std": round(min((g["std"] for g in gates.values()), default=float("nan")), 5),
             "collapsed": sorted(g for g, f in flags.items() if any(x.startswith("collapsed") for x in f)),
             "gates": len(gates)}, right)


def table(rows: list[dict]) -> str:
    out = ["| seed | last attention layer | attention LR scale | test top-1 | vs recipe, pp (95 % CI) "
           "| smallest gate std | collapsed gates | train s |", "|" + "---|" * 8]
    for r in rows:
        d = r.get("vs_recipe_pp")
        vs = "recipe" if d is None else f"{d:+.2f} ({r['vs_recipe_ci_pp'][0]:+.2f}, {r['vs_recipe_ci_pp'][1]:+.2f})"
        out.append(f"| {r['seed']} | {'zero-init' if r['init'] == 'zero' else 'default init'} "
                   f"| {r['attention_lr_scale']:g} | {100 * r['top1']:.2f} % | {vs} | {r['min_gate_std']:.4f} "
                   f"| {len(r['collapsed'])} of {r['gates']} | {r['train_s']:.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fusion", default="effatt")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--train-samples", type=int, default=12000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--data", default="fashion-mnist", help="named source or IDX folder")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = training_data(args.data, args.train_samples)
    mean, std = norm_stats(data.train, 1, 32)
    contract = PreprocessContract(32, 1, mean, std, data.class_names)
    rows: list[dict] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        recipe = None
        for init, scale in GRID:
            r, right = run(args.fusion, init, scale, seed, data, contract, args)
            if recipe is None:
                recipe = right
            else:  # "drop" of this variant against the recipe: positive = the variant is better
                lo, hi = bootstrap_drop_ci(recipe, right)
                r.update(vs_recipe_pp=round(100 * (right.mean() - recipe.mean()), 3),
                         vs_recipe_ci_pp=[round(-hi, 3) + 0.0, round(-lo, 3) + 0.0])  # + 0.0: no "-0.00"
            rows.append(r)
            print(json.dumps(r), flush=True)
            if args.json:  # after every run: a long benchmark keeps what it measured
                args.json.write_text(json.dumps({
                    "cpu": cpu_name(), "data": data.source, "fingerprint": data.fingerprint, "input_size": 32,
                    "model": "resnet", "fusion": args.fusion, "width": args.width,
                    "train_samples": len(data.train), "epochs": args.epochs, "test_samples": len(data.test),
                    "rows": rows}, indent=2))
    print(f"\nresnet/{args.fusion} on {data.source}: {len(data.train)} training images, {args.epochs} epochs at "
          f"32x32; {len(data.test)} test images; CPU {cpu_name()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
