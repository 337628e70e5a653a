"""One model answering one list of questionnaire items: prompts, cached contexts, scoring and capture.

Everything per-model that PAS and its evaluation need goes through a :class:`QuestionnaireSession`:

* each item's question prompt is split into a *context* (all but the last token) and its final token;
  the contexts are encoded once, unsteered, into a :class:`~memalign.persona.batching.ContextBank`;
* :meth:`score` runs the final tokens (optionally under a steering) and scores the option tokens;
* :meth:`capture` runs final token + agree/disagree answer and records the heads at the answer token.

Banks and activations are cached on disk under ``memalign.models.cache_dir.cache_root()/persona`` keyed by
the model (name, dims, weight fingerprint, dtype) and a hash of every token id, as safetensors.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memalign.errors import ConfigError
from memalign.models.cache_dir import cache_root
from memalign.persona.batching import ContextBank
from memalign.persona.capture import (
    HeadActivations,
    cache_key,
    capture_last_token,
    model_identity,
    stack_records,
)
from memalign.persona.instruments import Item
from memalign.persona.prompts import (
    PromptConfig,
    contrast_answer_ids,
    option_token_ids,
    question_prompt_ids,
)
from memalign.persona.scoring import AnswerScores, OptionScorer
from memalign.persona.steering import Steering, check_positions, row_shifts
from memalign.progress import status

logger = logging.getLogger(__name__)


def persona_cache_dir() -> Path:
    return cache_root() / "persona"


class QuestionnaireSession:
    """Prompts for ``items`` on ``model``; contexts are encoded lazily (first :meth:`score`/:meth:`capture`).

    ``system`` replaces the prompt config's system prompt for every item (a personality prompt or a
    few-shot profile: the shared prefix is then encoded once and reused by every item). ``cache``:
    True for the default cache directory, a path for another, False to keep nothing on disk.
    ``batch_size`` is the encoding batch; ``max_rows`` the width of the (memory-bound) continuations.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        items: Sequence[Item],
        config: PromptConfig | None = None,
        rewordings: Mapping[int, str] | None = None,
        system: str | None = None,
        batch_size: int = 16,
        cache: bool | str | Path = True,
        max_rows: int = 128,
    ) -> None:
        if not items:
            raise ConfigError("a questionnaire session needs at least one item")
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        self.model, self.tokenizer = model, tokenizer
        self.items = tuple(items)
        self.item_ids = tuple(item.full_id for item in self.items)
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ConfigError("duplicate items in a questionnaire session")
        self._row = {item_id: n for n, item_id in enumerate(self.item_ids)}
        self.config = config or PromptConfig()
        self.batch_size, self.max_rows = batch_size, max_rows
        self._rewordings, self._system = dict(rewordings or {}), system
        self.questions = [
            question_prompt_ids(tokenizer, it, self.config, self._rewordings.get(it.full_id), system)
            for it in self.items
        ]
        if any(len(q) < 2 for q in self.questions):
            raise ConfigError("a question prompt tokenized to fewer than two tokens")
        self.contexts = [q[:-1] for q in self.questions]
        self.finals = [[q[-1]] for q in self.questions]
        self.scorer = OptionScorer(option_token_ids(tokenizer, self.config), self.config.values)
        self.cache_dir = None if cache is False else (persona_cache_dir() if cache is True else Path(cache))
        self._identity = model_identity(model)
        self._bank: ContextBank | None = None
        self._unsteered: AnswerScores | None = None
        self._option_path_ok: bool | None = None

    # ---- cache plumbing -------------------------------------------------------------------------
    def _cache_path(self, kind: str, *parts: object) -> Path | None:
        if self.cache_dir is None:
            return None
        key = cache_key(self._identity, str(self.model.dtype), kind, *parts)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self._identity["model_id"] or "model").strip("_")[-48:]
        return self.cache_dir / kind / f"{slug}-{key}.safetensors"

    @property
    def bank(self) -> ContextBank:
        """Unsteered encodings of every context (built or loaded on first use)."""
        if self._bank is None:
            path = self._cache_path("banks", self.contexts, self.batch_size)
            if path is not None and path.is_file():
                logger.debug("loading encoded questions from %s", path)
                self._bank = ContextBank.load(path, self.model.device)
            else:
                self._bank = ContextBank.build(
                    self.model, self.contexts, self.batch_size, description=f"Encoding {len(self.items)} questions"
                )
                if path is not None:
                    self._bank.save(path, {"model": self._identity})
        return self._bank

    def rows(self, item_ids: Sequence[int] | None) -> list[int]:
        if item_ids is None:
            return list(range(len(self.items)))
        unknown = [i for i in item_ids if i not in self._row]
        if unknown:
            raise ConfigError(f"item {unknown[0]} is not in this questionnaire session")
        return sorted({self._row[i] for i in item_ids})

    # ---- scoring --------------------------------------------------------------------------------
    def score(
        self,
        steering: Steering | None = None,
        alpha: float | None = None,
        item_ids: Sequence[int] | None = None,
        positions: str | None = None,
    ) -> AnswerScores:
        """Option scores of the items (all, or ``item_ids`` in session order), optionally under a steering.

        With the ``generated`` policy only the final token is recomputed (on the cached contexts); with
        ``all`` the contexts themselves change, so they are re-encoded under the steering.
        """
        rows = self.rows(item_ids)
        ids = [self.item_ids[r] for r in rows]
        finals = [self.finals[r] for r in rows]
        if steering is None:
            if self._unsteered is None:
                self._unsteered = self.scorer(
                    self.bank.run(self.model, self.finals, max_rows=self.max_rows), self.item_ids
                )
            return self._unsteered.subset(ids)
        policy = check_positions(positions or steering.positions)
        if policy == "generated":
            bank = self.bank
            with steering.apply(self.model, alpha=alpha, positions=policy):
                return self.scorer(bank.run(self.model, finals, rows, max_rows=self.max_rows), ids)
        with steering.apply(self.model, alpha=alpha, positions=policy):
            bank = ContextBank.build(
                self.model, [self.contexts[r] for r in rows], self.batch_size, description="Encoding steered questions"
            )
            return self.scorer(bank.run(self.model, finals, max_rows=self.max_rows), ids)

    def score_rows(self, item_ids: Sequence[int], shifts: Mapping[int, torch.Tensor]) -> AnswerScores:
        """Score ``item_ids`` (repeats allowed) with a different o_proj shift per row (``generated`` policy).

        ``shifts[layer]`` is (len(item_ids), heads*head_dim). One call evaluates a whole grid of candidate
        steerings; the result has one row per requested item, in order (``by_item`` would merge repeats,
        use ``predictions``).
        """
        rows = [self.rows([i])[0] for i in item_ids]
        finals = [self.finals[r] for r in rows]
        vocab = self.scorer.vocab if self.option_logits_match() else None
        logits = self.bank.run(
            self.model,
            finals,
            rows,
            max_rows=self.max_rows,
            chunk_context=lambda part: row_shifts(self.model, shifts, part, "generated"),
            vocab=vocab,
        )
        if vocab is None:
            return self.scorer(logits, list(item_ids))
        return self.scorer.from_option_logits(logits, list(item_ids))

    def option_logits_match(self) -> bool:
        """Whether option logits from decoder + output-embedding rows equal the model's own (checked once).

        True for every supported family; a model whose head does more than a linear map (and optional
        soft-capping) falls back to full logits instead of being scored wrongly.
        """
        if self._option_path_ok is None:
            rows = list(range(min(2, len(self.items))))
            finals = [self.finals[r] for r in rows]
            full = self.scorer(self.bank.run(self.model, finals, rows), [self.item_ids[r] for r in rows])
            sub = self.scorer.from_option_logits(
                self.bank.run(self.model, finals, rows, vocab=self.scorer.vocab), [self.item_ids[r] for r in rows]
            )
            self._option_path_ok = bool(torch.allclose(full.probs, sub.probs, atol=1e-3))
        return self._option_path_ok

    # ---- activation capture ---------------------------------------------------------------------
    def capture(self) -> HeadActivations:
        """Heads of every item's agree and disagree prompt at the read position (cached on disk).

        ``config.read == "answer"``: at the answer token appended to the question (PAS).
        ``config.read == "decision"``: at the last token of the question with a decision instruction.
        """
        if self.config.read == "decision":
            return self._capture_decision()
        agree, disagree = contrast_answer_ids(self.tokenizer, self.config)
        path = self._cache_path("activations", self.questions, agree, disagree)
        if path is not None and path.is_file():
            return HeadActivations.load(path)
        bank = self.bank  # encode outside the capture hooks: only the answer forwards are recorded
        captured = []
        with status(f"Capturing head activations for {len(self.items)} items x agree/disagree"):
            for answer in (agree, disagree):
                with capture_last_token(self.model) as records:
                    bank.run(self.model, [final + answer for final in self.finals], max_rows=self.max_rows)
                captured.append(stack_records(records))
        activations = HeadActivations(self.item_ids, captured[0], captured[1])
        if path is not None:
            activations.save(path, {"model": self._identity, "answers": [agree, disagree]})
        return activations

    def _capture_decision(self) -> HeadActivations:
        prompts = [
            [
                question_prompt_ids(
                    self.tokenizer, item, self.config, self._rewordings.get(item.full_id), self._system, decided=letter
                )
                for item in self.items
            ]
            for letter in (self.config.agree_letter, self.config.disagree_letter)
        ]
        path = self._cache_path("activations", "decision", prompts)
        if path is not None and path.is_file():
            return HeadActivations.load(path)
        captured = []
        for side, questions in zip(("agree", "disagree"), prompts, strict=True):
            bank = ContextBank.build(
                self.model,
                [q[:-1] for q in questions],
                self.batch_size,
                description=f"Encoding {side} decision prompts",
            )
            with capture_last_token(self.model) as records:
                bank.run(self.model, [[q[-1]] for q in questions], max_rows=self.max_rows)
            captured.append(stack_records(records))
        if torch.equal(captured[0], captured[1]):
            raise ConfigError("agree and disagree decision prompts give identical activations")
        activations = HeadActivations(self.item_ids, captured[0], captured[1])
        if path is not None:
            activations.save(path, {"model": self._identity, "read": "decision"})
        return activations
