"""The histogram observer's binning (edgefuse.quantize.observers): torchao's HistogramObserver up to values
within float rounding of a bin edge, on the large tensors it bins itself and the cases it hands back."""

import pytest
import torch

from edgefuse.quantize.observers import FAST_HISTC_MIN_NUMEL, FastHistogramObserver, fast_histc
from edgefuse._quiet import import_pt2e

import_pt2e()
from torchao.quantization.pt2e import HistogramObserver  # noqa: E402

SHAPE = (4, 16, 48, 48)  # 147 k values: binned by fast_histc
assert torch.Size(SHAPE).numel() >= FAST_HISTC_MIN_NUMEL


def _moved(a: torch.Tensor, b: torch.Tensor) -> float:
    """Values in another bin: half the L1 distance of two histograms of the same values."""
    return float((a - b).abs().sum()) / 2


@pytest.mark.parametrize("kind", ["normal", "relu", "heavy_tail", "few_levels", "far_from_zero"])
def test_fast_histc_bins_as_histc(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g)
    x = {"normal": x, "relu": x.relu(), "heavy_tail": x ** 3,
         "few_levels": torch.randint(0, 7, SHAPE, generator=g).float() / 3,
         # a range narrow for its distance from zero, where the fused multiply-add would cancel
         "far_from_zero": 3e5 + 40 * torch.rand(SHAPE, generator=g)}[kind]
    lo, hi = torch.aminmax(x)
    for bins in (2048, 256):
        fast, ref = fast_histc(x, bins, lo, hi), torch.histc(x, bins, min=float(lo), max=float(hi))
        assert fast.dtype == ref.dtype and fast.shape == ref.shape
        assert float(fast.sum()) == x.numel()  # every value counted once, the maximum too
        assert _moved(fast, ref) <= 1e-4 * x.numel()
    # a wider range than the values' (an observer's running range after earlier batches)
    wide = fast_histc(x, 2048, lo - 1.5, hi + 0.25)
    assert _moved(wide, torch.histc(x, 2048, min=float(lo) - 1.5, max=float(hi) + 0.25)) <= 1e-4 * x.numel()


def test_fast_histc_bins_past_16_bit_bin_numbers():
    """The largest bin count 16-bit bin numbers hold, and more (counted in 32-bit ones): every value counted
    once, in histc's bin but for values within float rounding of an edge (of which there are more, in
    proportion to the bins: 96 and 189 of these 147 k values at 32767 and 40000 bins, 3 at 2048)."""
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)) ** 3
    lo, hi = torch.aminmax(x)
    for bins in (2**15 - 1, 2**15, 40000):
        fast = fast_histc(x, bins, lo, hi)
        assert fast.shape == (bins,) and float(fast.sum()) == x.numel()
        assert _moved(fast, torch.histc(x, bins, min=float(lo), max=float(hi))) <= 1e-4 * x.numel() * bins / 2048


def test_fast_histc_hands_degenerate_and_small_tensors_to_histc():
    const = torch.full(SHAPE, 2.0)  # lo == hi: histc widens the range to [1, 3]
    assert torch.equal(fast_histc(const, 8, torch.tensor(2.0), torch.tensor(2.0)), torch.histc(const, 8, 2.0, 2.0))
    small = torch.randn(10, 10)
    assert torch.equal(fast_histc(small, 64, small.min(), small.max()), torch.histc(small, 64, float(small.min()),
                                                                                     float(small.max())))


def test_fast_histc_split_over_threads_counts_the_same():
    """A tensor of several chunks is binned on torch's threads, each its own range of chunks: the counts are
    the single-thread counts (integers added in another order), the odd tail included."""
    from edgefuse.quantize import observers

    x = torch.randn(3 * observers._CHUNK + 1001, generator=torch.Generator().manual_seed(2)) ** 3
    lo, hi = torch.aminmax(x)
    threads, observers._POOL = torch.get_num_threads(), None
    try:
        torch.set_num_threads(1)
        one = fast_histc(x, 2048, lo, hi)
        torch.set_num_threads(3)
        split = fast_histc(x, 2048, lo, hi)
    finally:
        torch.set_num_threads(threads)
    assert observers._POOL is not None  # the split path ran (only it makes the pool)
    assert torch.equal(one, split) and float(split.sum()) == x.numel()
    assert _moved(split, torch.histc(x, 2048, min=float(lo), max=float(hi))) <= 1e-4 * x.numel()


def test_a_forked_child_does_not_inherit_the_histogram_pool():
    """A forked process inherits the pool object but not its threads (work submitted there would never
    run): the child starts without one and makes its own."""
    import multiprocessing

    from edgefuse.quantize import observers

    x = torch.randn(3 * observers._CHUNK, generator=torch.Generator().manual_seed(3))
    lo, hi = torch.aminmax(x)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fast_histc(x, 2048, lo, hi)
    finally:
        torch.set_num_threads(threads)
    assert observers._POOL is not None
    with multiprocessing.get_context("fork").Pool(1) as pool:
        # (no torch op in the child: torch's own OpenMP threads do not survive a fork either)
        assert pool.apply_async(_child_has_no_pool).get(timeout=60) is True


def _child_has_no_pool():
    from edgefuse.quantize import observers

    return observers._POOL is None and observers._POOL_SIZE == 0


def _batches():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(SHAPE, generator=g)
    # the same range, a wider one on both sides, a narrower one, an outlier
    yield base
    yield base * 0.9
    yield base * 2 + 0.5
    yield base.relu() * 0.5
    out = base.clone()
    out[0, 0, 0, 0] = 40.0
    yield out


@pytest.mark.parametrize("channels_last", [False, True])
def test_observer_calibrates_as_torchao(channels_last):
    fast, ref = FastHistogramObserver(), HistogramObserver()
    for x in _batches():
        ref(x)
        y = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        assert fast(y) is y  # passed on as it came
    assert torch.equal(fast.min_val, ref.min_val) and torch.equal(fast.max_val, ref.max_val)
    total = 5 * torch.Size(SHAPE).numel()  # (re-binning onto a wider range rounds the counts: torchao's too)
    assert float(fast.histogram.sum()) == pytest.approx(total, rel=1e-6)
    assert float(ref.histogram.sum()) == pytest.approx(total, rel=1e-6)
    assert _moved(fast.histogram, ref.histogram) <= 1e-4 * float(ref.histogram.sum())
    (s1, z1), (s2, z2) = fast.calculate_qparams(), ref.calculate_qparams()
    assert torch.equal(z1, z2)
    assert torch.allclose(s1, s2, rtol=1e-6, atol=0)


def test_observer_drops_infinite_values_as_torchao():
    fast, ref = FastHistogramObserver(), HistogramObserver()
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    x[1, 2, 3, 4] = float("inf")
    with pytest.warns(UserWarning, match="inf"):
        ref(x)
    with pytest.warns(UserWarning, match="inf"):
        fast(x)
    assert torch.isfinite(fast.max_val) and torch.equal(fast.max_val, ref.max_val)
    assert torch.equal(fast.histogram, ref.histogram)  # that batch went to torchao's own forward


def test_observer_ignores_empty_batches():
    obs = FastHistogramObserver()
    obs(torch.empty(0, 3, 8, 8))
    assert obs.min_val == float("inf")  # still unset
