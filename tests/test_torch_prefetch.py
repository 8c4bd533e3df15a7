"""GpuPrefetcher: a transparent pass-through off CUDA, device copies on CUDA."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from negmine.torch import GpuPrefetcher  # noqa: E402


def batches():
    return [
        {"ids": torch.arange(4) + i, "nested": [torch.ones(2) * i, ("label", i)]} for i in range(5)
    ]


def test_cpu_is_a_pass_through_of_the_same_objects():
    data = batches()
    prefetcher = GpuPrefetcher(data, "cpu", depth=3)
    assert len(prefetcher) == 5
    got = list(prefetcher)
    assert len(got) == 5
    assert all(a is b for a, b in zip(got, data))
    assert list(prefetcher) == got  # iterable again


def test_works_with_a_dataloader():
    dataset = torch.utils.data.TensorDataset(torch.arange(10))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3)
    got = [b[0].tolist() for b in GpuPrefetcher(loader, torch.device("cpu"))]
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


@pytest.mark.parametrize(
    ("depth", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_depth_is_a_clear_error(depth, error):
    with pytest.raises(error, match="depth"):
        GpuPrefetcher([], "cpu", depth=depth)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_arrive_on_the_device_with_the_same_values():
    data = batches()
    got = list(GpuPrefetcher(data, "cuda", depth=2))
    assert len(got) == len(data)
    for moved, original in zip(got, data):
        assert moved["ids"].is_cuda and moved["nested"][0].is_cuda
        assert torch.equal(moved["ids"].cpu(), original["ids"])
        assert moved["nested"][1] == original["nested"][1]
