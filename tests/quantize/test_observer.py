"""SearchOnceHistogramObserver: torchao's histogram ranges, searched once per histogram."""

from __future__ import annotations

import torch

from edgefuse.quantize.quantizer import HistogramObserver, SearchOnceHistogramObserver


def _pair(**kw):
    torch.manual_seed(0)
    return HistogramObserver(**kw), SearchOnceHistogramObserver(**kw)


def test_same_qparams_as_torchao_and_updated_after_more_data(monkeypatch):
    ref, fast = _pair(dtype=torch.quint8)
    searches = []
    parent = HistogramObserver._non_linear_param_search
    monkeypatch.setattr(HistogramObserver, "_non_linear_param_search",
                        lambda self: searches.append(type(self)) or parent(self))
    for batch in (torch.randn(64, 16) * 3, torch.randn(64, 16).exp()):
        ref(batch), fast(batch)
        expected = ref.calculate_qparams()
        for _ in range(3):  # convert asks once per observer, then again per derived bias scale
            got = fast.calculate_qparams()
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    # one search per histogram for the cached observer (two histograms), one per call for torchao's (two)
    assert searches.count(SearchOnceHistogramObserver) == 2 and searches.count(HistogramObserver) == 2


def test_a_loaded_state_is_searched_again():
    _, fast = _pair()
    fast(torch.randn(256))
    first = fast.calculate_qparams()
    other = SearchOnceHistogramObserver()
    other(torch.randn(256) * 10)
    fast.load_state_dict(other.state_dict())  # copy_ into the same tensors: their versions move on
    assert torch.equal(fast.calculate_qparams()[0], other.calculate_qparams()[0])
    assert not torch.equal(fast.calculate_qparams()[0], first[0])
