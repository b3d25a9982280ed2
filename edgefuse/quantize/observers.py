"""The activation observers calibration fills, by ``QuantConfig.calibration``.

Each reads a copy-free dense view of a channels-last activation (calibration runs such batches
channels-last): a range or a histogram does not depend on the order of the elements, so they come out
the same in either layout, and ``aminmax`` and the histogram no longer copy every activation first (2 s
of the 7 s that 96 images at 224x224 through MobileNetV3-large spent in them).

The histogram observer bins large tensors with one multiply-add, a cast to 16-bit bin numbers and
``torch.bincount`` instead of ``torch.histc`` (:func:`fast_histc`): the same bins for every value not
within float rounding of a bin edge (1.6e-5 of MobileNetV3-large's values move to a neighbouring bin; the
ranges of its 113 observers come out bit-identical). ``histc`` was 9-11 s of the 15-17 s that calibrating MobileNetV3-large
on 300 images at 224x224 took (it searches each value's bin among the edges; this computes it);
calibration now takes 0.77x the time there, 0.74x for EfficientNet-B0. Its bincount runs on one core, so a
tensor of several chunks is split over torch's threads (the binning of MobileNetV3-large's calibration:
6.1 s -> 5.1 s on 2 cores, the same counts).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from edgefuse._layout import dense_view
from edgefuse._quiet import import_pt2e

import_pt2e()
from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver  # noqa: E402

#: Tensors with fewer elements go to ``torch.histc`` itself (the fixed costs dominate there).
FAST_HISTC_MIN_NUMEL = 2**16
_CHUNK = 2**18


def fast_histc(x: torch.Tensor, bins: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``torch.histc(x, bins, lo, hi)`` for a dense ``x`` whose values all lie in ``[lo, hi]`` (an observer's
    running range): ``floor((x - lo) * bins / (hi - lo))`` counted, ``hi`` in the last bin, as ``histc`` does.
    A value within float rounding of a bin edge may land in the bin next to ``histc``'s; nothing else
    differs. A degenerate range (``lo == hi``, which ``histc`` widens), one narrow and far from zero, or a
    small or non-float tensor goes to ``torch.histc``."""
    lo_f, hi_f = float(lo), float(hi)
    if (x.numel() < FAST_HISTC_MIN_NUMEL or not hi_f > lo_f or x.dtype != torch.float32 or not x.is_contiguous()
            # x * k - lo * k cancels: with values 7500x the range from zero 20 % moved bin (1000x: none)
            or max(abs(lo_f), abs(hi_f)) > 1000 * (hi_f - lo_f)):
        return torch.histc(x, bins, min=lo_f, max=hi_f)
    k = bins / (hi_f - lo_f)
    flat = x.reshape(-1)
    # bincount runs on one core: split the tensor (at chunk boundaries) over torch's threads and add the
    # counts -- the same integers in any order (1.8x faster on 2 cores for a 6.4 M-value activation).
    workers = max(1, min(torch.get_num_threads(), flat.numel() // _CHUNK))
    step = -(-flat.numel() // workers // _CHUNK) * _CHUNK
    (first, *rest) = [flat[a:a + step] for a in range(0, flat.numel(), step)]
    futures = [_pool(len(rest)).submit(_count, part, -lo_f * k, k, bins) for part in rest]  # none: no pool
    counts = _count(first, -lo_f * k, k, bins)
    for f in futures:
        counts += f.result()
    return counts.to(torch.float32)


def _count(flat: torch.Tensor, offset: float, scale: float, bins: int) -> torch.Tensor:
    """Bin counts of ``floor(flat * scale + offset)`` clamped to ``[0, bins)``."""
    offset_t = torch.full((), offset)
    # In chunks that stay in cache: over a whole 38 M-value tensor the two temporaries made it memory-bound
    # (0.8x histc's time; chunked 0.28x).
    fbuf = torch.empty(min(_CHUNK, flat.numel()))
    # 16-bit bin numbers when they fit: the cast, the clamp and bincount's own min/max passes read half the
    # bytes (with add's scalar alpha below: 432 -> 305 us per 262 k-value chunk, one core)
    ibuf = torch.empty(fbuf.shape, dtype=torch.int16 if bins < 2**15 else torch.int32)
    counts = torch.zeros(bins, dtype=torch.int64)
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start:start + _CHUNK]
        f, i = fbuf[:len(part)], ibuf[:len(part)]
        # (x - lo) * k in one vectorised pass: add with a scalar alpha (25 us a chunk; addcmul with a
        # 0-dim tensor factor took 117 us). Values lie in [lo, hi], so f lies in [0, bins] up to rounding.
        torch.add(offset_t, part, alpha=scale, out=f)
        i.copy_(f)  # truncation, which is floor for values >= lo
        counts += torch.bincount(i.clamp_(0, bins - 1), minlength=bins)
    return counts


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of at least ``workers`` threads (torch ops release the GIL)."""
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE < workers:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgefuse-histc"), workers
    return _POOL


def _forget_pool() -> None:
    # A forked child (a DataLoader worker, say) inherits the pool object but none of its threads: work
    # submitted to it would never run.
    global _POOL, _POOL_SIZE
    _POOL, _POOL_SIZE = None, 0


os.register_at_fork(after_in_child=_forget_pool)


def _dense(observer: type) -> type:
    """``observer`` fed a copy-free dense view of a channels-last activation (see the module docstring)."""

    class Dense(observer):
        def forward(self, x_orig):
            super().forward(dense_view(x_orig))
            return x_orig

    Dense.__name__ = Dense.__qualname__ = observer.__name__
    return Dense


class FastHistogramObserver(HistogramObserver):
    """torchao's ``HistogramObserver`` (the clipping range of least L2 quantization error, searched over a
    2048-bin histogram of every calibration value) with :func:`fast_histc` for its histograms. Its
    ``forward`` is torchao's (0.18): the running range grows to each batch's min/max, the histogram so far is
    re-binned onto the new range and the batch's histogram added; a batch with an infinite value goes to
    torchao's own ``forward``, which drops such values."""

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = dense_view(x_orig.detach())
        x_min, x_max = torch.aminmax(x)
        if not (torch.isfinite(x_min) and torch.isfinite(x_max)):
            super().forward(x)
            return x_orig
        cur_min, cur_max = self.min_val, self.max_val
        if cur_min == float("inf") or cur_max == float("-inf"):  # the first batch
            new_min, new_max = x_min, x_max
            histogram = fast_histc(x, self.bins, new_min, new_max)
        else:
            new_min, new_max = torch.min(cur_min, x_min).detach(), torch.max(cur_max, x_max).detach()
            update = fast_histc(x, self.bins, new_min, new_max).to(self.histogram.device)
            if new_min == cur_min and new_max == cur_max:
                histogram = self.histogram + update
            else:
                histogram = self._combine_histograms(self.histogram, cur_min, cur_max, update, new_min, new_max)
        self.histogram.detach_().resize_(histogram.shape)
        self.histogram.copy_(histogram)
        self.min_val.detach_().resize_(new_min.shape)
        self.min_val.copy_(new_min)
        self.max_val.detach_().resize_(new_max.shape)
        self.max_val.copy_(new_max)
        return x_orig


#: The calibration observers of activations, by ``QuantConfig.calibration``.
ACTIVATION_OBSERVERS = {"minmax": _dense(MinMaxObserver), "moving_average": _dense(MovingAverageMinMaxObserver),
                        "histogram": FastHistogramObserver}
