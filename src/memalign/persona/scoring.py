"""Deterministic answer scoring from the next-token distribution over the option tokens.

No generation and no regex: PAlign parsed the first 12 generated characters, read "The ..." as answer E
and dropped unparsed answers. Here an option's probability is the summed probability of its
single-token spellings (``(A``, ``A``, `` A``), renormalised over the options; ``mass`` records how much
of the whole next-token distribution the options hold, so a model that does not answer shows up as
low mass instead of silently as some letter. The expected value is the default prediction (an
unsteered model that always prefers "B" still moves its expectation with the item).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from memalign.errors import ConfigError
from memalign.persona.choices import check_choice

PREDICTIONS = ("expected", "argmax")


def check_prediction(kind: str) -> str:
    return check_choice("prediction", kind, PREDICTIONS)


@dataclass(frozen=True)
class AnswerScores:
    """Per item: option probabilities (renormalised), option mass, and the option values (A=5 .. E=1)."""

    item_ids: tuple[int, ...]
    probs: torch.Tensor  # (N, options), rows sum to 1
    mass: torch.Tensor  # (N,)
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.probs.shape != (n, len(self.values)) or self.mass.shape != (n,):
            raise ConfigError("AnswerScores: probs must be (items, options) and mass (items,)")

    @property
    def expected(self) -> torch.Tensor:
        return self.probs @ torch.tensor(self.values, dtype=self.probs.dtype)

    @property
    def argmax(self) -> torch.Tensor:
        return torch.tensor(self.values, dtype=self.probs.dtype)[self.probs.argmax(dim=-1)]

    def predictions(self, kind: str = "expected") -> torch.Tensor:
        return self.expected if check_prediction(kind) == "expected" else self.argmax

    def by_item(self, kind: str = "expected") -> dict[int, float]:
        return dict(zip(self.item_ids, self.predictions(kind).tolist(), strict=True))

    def abs_errors(self, raw: Mapping[int, int | None], kind: str = "expected") -> dict[int, float]:
        """|prediction - raw answer| for every item with a non-missing raw answer."""
        preds = self.by_item(kind)
        return {i: abs(preds[i] - raw[i]) for i in self.item_ids if raw.get(i) is not None}

    def subset(self, item_ids: Sequence[int]) -> AnswerScores:
        index = {i: n for n, i in enumerate(self.item_ids)}
        rows = torch.tensor([index[i] for i in item_ids], dtype=torch.long)
        return AnswerScores(tuple(item_ids), self.probs[rows], self.mass[rows], self.values)


class OptionScorer:
    """Turns next-token logits (N, vocab) into option probabilities using per-option token id sets."""

    def __init__(self, option_ids: Sequence[Sequence[int]], values: Sequence[int]) -> None:
        if len(option_ids) != len(values) or any(not ids for ids in option_ids):
            raise ConfigError("one non-empty token id list per option value is needed")
        self.option_ids = tuple(tuple(int(t) for t in ids) for ids in option_ids)
        self.values = tuple(int(v) for v in values)
        flat = [t for ids in self.option_ids for t in ids]
        if len(set(flat)) != len(flat):
            raise ConfigError("a token id may belong to one option only")
        self._flat = torch.tensor(flat, dtype=torch.long)
        self._owner = torch.tensor([o for o, ids in enumerate(self.option_ids) for _ in ids], dtype=torch.long)

    @property
    def vocab(self) -> list[int]:
        """The option token ids, in the column order :meth:`from_option_logits` expects."""
        return self._flat.tolist()

    def from_option_logits(self, logits: torch.Tensor, item_ids: Sequence[int]) -> AnswerScores:
        """Scores from the option tokens' logits only (columns = :attr:`vocab`); ``mass`` is unknown (NaN)."""
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        per_option = torch.zeros(probs.shape[0], len(self.values)).index_add_(1, self._owner, probs)
        return AnswerScores(tuple(item_ids), per_option, torch.full((probs.shape[0],), math.nan), self.values)

    def __call__(self, logits: torch.Tensor, item_ids: Sequence[int]) -> AnswerScores:
        probs = torch.softmax(logits.float(), dim=-1)[:, self._flat.to(logits.device)].cpu()
        per_option = torch.zeros(probs.shape[0], len(self.values)).index_add_(1, self._owner, probs)
        mass = per_option.sum(-1)
        return AnswerScores(tuple(item_ids), per_option / mass.clamp_min(1e-30)[:, None], mass, self.values)
