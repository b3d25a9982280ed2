import numpy as np

from edgefuse.metrics import topk_accuracy


def test_top1_breaks_ties_as_argmax_does():
    # int8 logits tie often; top-1 must be the argmax-based accuracy the drop interval and agreement use
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 3, size=(2000, 10)).astype(np.float32)  # many exact ties
    labels = rng.integers(0, 10, size=2000)
    assert topk_accuracy(logits, labels, 1) == float((logits.argmax(1) == labels).mean())
