"""Per-head linear probes, head ranking and centre-of-mass directions, vectorised over all heads at once.

PAlign fits one sklearn ``LogisticRegression`` per (layer, head) in a Python loop (1024 fits per person on
Llama-3-8B) on an unseeded 60/40 split of *samples*, so an item's agree and disagree prompts can straddle
train and validation. Here one batched Newton solve fits every head together (the same L2-penalised
objective as sklearn's default, ``C * sum(log-loss) + ||w||^2 / 2`` with an unpenalised intercept), and
held-out accuracy comes from seeded K-fold validation grouped by item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memalign.errors import ConfigError


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    c: float = 1.0,
    max_iter: int = 30,
    tol: float = 1e-4,
    dtype: torch.dtype = torch.float32,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 logistic regression per head: x (N, heads, D), y (N,) in {0, 1} -> weights (heads, D), bias (heads,).

    Damped Newton (step halving per head whenever the objective would rise); the L2 term keeps every
    Hessian well conditioned, so float32 is enough and twice as fast as float64 on a CPU. ``init``
    (weights, bias) warm-starts the solve, e.g. from a fit on overlapping data (other CV folds).
    """
    if c <= 0:
        raise ConfigError("probe C must be > 0")
    n, heads, dim = x.shape
    xt = torch.cat([x.to(dtype), torch.ones(n, heads, 1, dtype=dtype)], dim=-1).transpose(0, 1).contiguous()
    yt = y.to(dtype)[None, :].expand(heads, n)
    reg = torch.full((dim + 1,), 1.0 / c, dtype=dtype)
    reg[-1] = 0.0
    theta = torch.zeros(heads, dim + 1, dtype=dtype)
    if init is not None:
        theta = torch.cat([init[0].to(dtype), init[1].to(dtype)[:, None]], dim=-1)

    def logits(t: torch.Tensor) -> torch.Tensor:
        return torch.bmm(xt, t[..., None])[..., 0]  # (H, N)

    def objective(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(z).sum(-1) - (yt * z).sum(-1) + 0.5 * (reg * t * t).sum(-1)

    z = logits(theta)
    loss = objective(theta, z)
    ridge = torch.diag(reg) + torch.eye(dim + 1, dtype=dtype) * 1e-6
    for _ in range(max_iter):
        p = torch.sigmoid(z)
        grad = torch.bmm(xt.transpose(1, 2), (p - yt)[..., None])[..., 0] + reg * theta
        hess = torch.bmm(xt.transpose(1, 2) * (p * (1 - p))[:, None, :], xt) + ridge
        step = torch.linalg.solve(hess, grad[..., None])[..., 0]
        if step.abs().max() < tol * (1.0 + theta.abs().max()):  # relative: float32 steps never reach 0
            break
        # Damping: halve the step of any head whose objective would rise (beyond float32 noise).
        scale = torch.ones(heads, 1, dtype=dtype)
        for _ in range(20):
            candidate = theta - scale * step
            z_new = logits(candidate)
            new_loss = objective(candidate, z_new)
            worse = new_loss > loss + 1e-5 * loss.abs() + 1e-6
            if not worse.any():
                break
            scale = torch.where(worse[:, None], scale * 0.5, scale)
        accept = ~worse
        theta = torch.where(accept[:, None], candidate, theta)
        z = torch.where(accept[:, None], z_new, z)
        loss = torch.where(accept, new_loss, loss)
    return theta[:, :-1].float(), theta[:, -1].float()


def item_folds(groups: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Seeded partition of the unique group ids (items) into ``folds`` parts; returns row masks."""
    unique = torch.unique(groups)
    if folds < 2:
        raise ConfigError("probe validation needs at least 2 folds")
    folds = min(folds, len(unique))
    if folds < 2:
        raise ConfigError("probe validation needs at least 2 distinct items")
    order = unique[torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed))]
    return [torch.isin(groups, part) for part in torch.tensor_split(order, folds)]


@dataclass(frozen=True)
class ProbeScores:
    """Held-out accuracy and mean log-loss per head (flattened layer*heads index)."""

    accuracy: torch.Tensor
    log_loss: torch.Tensor

    def ranking(self) -> torch.Tensor:
        """Head indices, best first: higher held-out accuracy, ties broken by lower held-out log-loss.

        Accuracy on ~100-200 samples takes few distinct values, so many heads tie; the log-loss is a
        continuous, still held-out, tie-breaker (and the order is deterministic).
        """
        by_loss = torch.argsort(self.log_loss, stable=True)
        return by_loss[torch.argsort(-self.accuracy[by_loss], stable=True)]


def probe_scores(
    x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, folds: int = 4, seed: int = 0, c: float = 1.0
) -> ProbeScores:
    """Item-grouped K-fold held-out accuracy/log-loss of a logistic probe on every head: x (N, heads, D)."""
    if x.shape[0] != y.shape[0] or y.shape[0] != groups.shape[0]:
        raise ConfigError("probe data: x, y and groups must have the same number of rows")
    correct = torch.zeros(x.shape[1])
    log_loss = torch.zeros(x.shape[1])
    warm: tuple[torch.Tensor, torch.Tensor] | None = None
    for held_out in item_folds(groups, folds, seed):
        w, b = warm = fit_logistic(x[~held_out], y[~held_out], c=c, init=warm)
        z = torch.einsum("nhd,hd->nh", x[held_out].float(), w) + b
        target = y[held_out][:, None]
        correct += ((z > 0).float() == target).float().sum(0)
        log_loss += torch.nn.functional.binary_cross_entropy_with_logits(z, target.expand_as(z), reduction="none").sum(
            0
        )
    return ProbeScores(correct / x.shape[0], log_loss / x.shape[0])


def com_directions(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unit centre-of-mass directions per head, mean(x | y=1) - mean(x | y=0): (heads, D)."""
    pos, neg = y > 0.5, y <= 0.5
    if not pos.any() or not neg.any():
        raise ConfigError("centre-of-mass directions need samples of both labels")
    diff = x[pos].double().mean(0) - x[neg].double().mean(0)
    norms = diff.norm(dim=-1, keepdim=True)
    if (norms == 0).any():
        raise ConfigError("a head's two classes have the same mean: its direction is undefined")
    return (diff / norms).float()


def projection_std(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Population std of every sample's projection on each head's direction (PAlign/ITI's scale): (heads,)."""
    return torch.einsum("nhd,hd->nh", x.double(), directions.double()).std(dim=0, unbiased=False).float()
