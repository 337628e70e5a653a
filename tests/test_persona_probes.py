"""Batched probes, grouped validation, head ranking and centre-of-mass directions on synthetic data."""

from __future__ import annotations

import pytest
import torch

from memalign.errors import ConfigError
from memalign.persona.probes import com_directions, fit_logistic, item_folds, probe_scores, projection_std

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted(n_items=60, heads=12, dim=16, signal_heads=(3, 7), strength=2.5, seed=0):
    """Two samples per item (as PAS builds them), label 1/0; a planted direction on ``signal_heads``."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor([1.0, 0.0] * n_items)
    groups = torch.arange(n_items).repeat_interleave(2)
    x = torch.randn(2 * n_items, heads, dim, generator=gen)
    direction = torch.nn.functional.normalize(torch.randn(dim, generator=gen), dim=0)
    for h in signal_heads:
        x[:, h] += strength * (2 * y[:, None] - 1) * direction
    return x, y, groups, direction


def test_logistic_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    x, y, _, _ = planted(heads=2, signal_heads=(0,), strength=0.5)
    w, b = fit_logistic(x, y, c=1.0)
    for h in range(2):
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(x[:, h].numpy(), y.numpy())
        assert torch.allclose(w[h], torch.tensor(ref.coef_[0], dtype=torch.float32), atol=1e-3)
        assert abs(float(b[h]) - float(ref.intercept_[0])) < 1e-3


def test_probes_rank_planted_heads_first_and_directions_recover_them():
    x, y, groups, direction = planted()
    scores = probe_scores(x, y, groups, folds=4, seed=0)
    top = scores.ranking()[:2].tolist()
    assert sorted(top) == [3, 7]
    assert scores.accuracy[top].min() > 0.9 and scores.accuracy.median() < 0.75
    dirs = com_directions(x[:, top], y)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert (dirs @ direction).min() > 0.95
    stds = projection_std(x[:, top], dirs)
    # Projections are +-2.5 plus unit noise: population std sqrt(2.5^2 + 1).
    assert torch.allclose(stds, torch.full((2,), (2.5**2 + 1) ** 0.5), atol=0.2)


def test_grouped_folds_keep_an_items_two_samples_together_and_are_seeded():
    groups = torch.arange(30).repeat_interleave(2)
    folds = item_folds(groups, 4, seed=3)
    assert torch.stack(folds).sum(0).eq(1).all()  # a partition
    for mask in folds:
        ids = groups[mask]
        assert torch.equal(torch.unique(ids).repeat_interleave(2), ids.sort().values)
    again = item_folds(groups, 4, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(folds, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(folds, item_folds(groups, 4, seed=4), strict=True))


def test_ranking_breaks_accuracy_ties_by_log_loss():
    from memalign.persona.probes import ProbeScores

    scores = ProbeScores(torch.tensor([0.9, 1.0, 1.0, 0.5]), torch.tensor([0.1, 0.4, 0.2, 0.9]))
    assert scores.ranking().tolist() == [2, 1, 0, 3]


def test_degenerate_inputs_raise():
    x, y, groups, _ = planted(heads=2, signal_heads=(1,))
    with pytest.raises(ConfigError, match="both labels"):
        com_directions(x, torch.ones_like(y))
    same = torch.zeros(4, 1, 3)
    with pytest.raises(ConfigError, match="same mean"):
        com_directions(same, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    with pytest.raises(ConfigError, match="at least 2"):
        item_folds(torch.zeros(4, dtype=torch.long), 3, 0)
    with pytest.raises(ConfigError, match="C must be > 0"):
        fit_logistic(x, y, c=0.0)
