"""Low-rank completion of a sparsified gradient: exact where enough entries survive, refused where they do not."""

import torch

from gradinv.attacks.completion import TOLERANCE, als, complete, residual, span_gap


def _low_rank(m: int, n: int, rank: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(m, rank, generator=generator) @ torch.randn(rank, n, generator=generator)


def _pruned(matrix: torch.Tensor, ratio: float) -> torch.Tensor:
    threshold = matrix.abs().flatten().kthvalue(int(ratio * matrix.numel())).values
    return torch.where(matrix.abs() > threshold, matrix, torch.zeros_like(matrix))


def test_the_largest_entries_determine_a_low_rank_matrix() -> None:
    # Prepare: a rank-6 60 x 90 matrix with its smallest 40% zeroed (as pruning at 0.4 leaves it)
    full = _low_rank(60, 90, 6)
    # Execute
    filled, info = complete(_pruned(full, 0.4))
    # Assert: the rank and the matrix, to float32 precision, two fits agreeing
    assert filled is not None and info["rank"] == 6 and abs(info["observed"] - 0.6) < 1e-9
    assert float((filled - full).norm() / full.norm()) < 1e-6 and info["agreement"] < 1e-5


def test_a_fit_exact_on_the_entries_left_but_off_the_true_span_is_refused() -> None:
    # Prepare: pruning at 0.5 leaves the rows of small norm a handful of entries each: a rank-6 fit agrees with every
    # entry left (to 8e-8) while its span lies 0.02 off the true one
    full = _low_rank(60, 90, 6).double()
    pruned = _pruned(full.float(), 0.5)
    u, v = als(pruned, (pruned != 0).double(), 6)
    truth = torch.linalg.svd(full)[0][:, :6]
    assert residual(pruned, (pruned != 0).double(), u, v) < TOLERANCE and span_gap(u, truth) > 0.01
    # Execute
    filled, info = complete(pruned)
    # Assert: a second fit from a moved start lands elsewhere, and the completion is refused
    assert filled is None and info["rank"] == 6 and info["agreement"] > 1e-3 and "unique" in info["stopped"]


def test_too_few_entries_are_refused_with_the_reason() -> None:
    full = _low_rank(60, 90, 6)
    # 5% of 5,400 entries (270) determine at most a rank-1 matrix (149 unknowns; rank 2 has 296), which does not fit
    filled, info = complete(_pruned(full, 0.95))
    assert filled is None and "no rank up to 1 fits the 270 entries" in info["stopped"] and "over_budget" not in info
    filled, info = complete(_pruned(full, 0.999))  # 5 entries: no rank fits in them
    assert filled is None and "too few to complete any rank" in info["stopped"]


def test_als_fits_the_observed_entries_only() -> None:
    full = _low_rank(30, 40, 3, seed=1)
    mask = (torch.rand(30, 40, generator=torch.Generator().manual_seed(2)) < 0.6).double()
    corrupted = full + 100.0 * (1 - mask)  # what the unobserved entries hold must not matter
    u, v = als(corrupted, mask, 3)
    assert residual(corrupted, mask, u, v) < TOLERANCE and float((u @ v.t() - full).norm() / full.norm()) < 1e-5


def test_a_fit_over_the_budget_stops_the_search_with_its_cost() -> None:
    filled, info = complete(_pruned(_low_rank(60, 90, 6), 0.4), budget=1e8)  # rank 4 would cost 4 * 5400 * 16 * 300
    assert filled is None and "a rank-4 fit of a 60 x 90 gradient costs 1e+08" in info["stopped"]
    assert info["over_budget"] is True
