"""PAlign's API over memalign: ``get_model(name)`` -> ``(PASLM, tokenizer)`` with PAlign's method names.

This module holds the reference project's interface (PAlign, ICLR 2025, ``PAlign/pas.py``), nothing that
memalign itself uses: it exists so code written against PAlign runs unchanged. Same names and data
shapes, memalign's fixes underneath:

* ``preprocess_activate_dataset(dataset, system_prompt)``: items as ``{"question", "answer_matching_behavior",
  "answer_not_matching_behavior"}``; prompts through the tokenizer's chat template (not the model path),
  read at the answer token (PAlign's ``[:-5]`` read a position where both prompts were identical on
  Llama-3); returns one ``(layers, heads * head_dim)`` float32 array per prompt, positive then negative.
* ``get_activations(acts, labels, num_to_intervene)``: probes ranked by seeded held-out accuracy with an
  item's two prompts kept together (PAlign: unseeded 60/40 split of samples, mean of train and val
  accuracy); centre-of-mass directions and projection stds as in PAlign. Returns PAlign's dict
  ``{"model.layers.{l}.self_attn.head_out": [(head, direction, std), ...]}``.
* ``set_activate(interventions, alpha)``: a forward pre-hook on ``o_proj`` at every position (PAlign's
  bias semantics) using the real ``head_dim`` (PAlign assumed hidden/heads, wrong for Qwen3); ``reset_all()``
  removes it. Nothing is written into the weights.
* ``generate(token_lists, max_new_tokens=...)``: Hugging Face ``generate`` with left padding and an
  attention mask (PAlign's loop had none); returns prompt + answer token lists.

Also importable as ``memalign.persona.compat``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memalign.chat_format import chat_input_ids, single_turn
from memalign.errors import ConfigError
from memalign.models.arch import get_arch_spec
from memalign.models.loading import load_model
from memalign.persona.batching import ContextBank
from memalign.persona.capture import capture_last_token, stack_records
from memalign.persona.probes import com_directions, probe_scores, projection_std
from memalign.persona.prompts import DEFAULT_SYSTEM_PROMPT
from memalign.persona.steering import Steering, SteeringHandle

_HEAD_OUT = re.compile(r"^model\.layers\.(\d+)\.self_attn\.head_out$")


def head_out_name(layer: int) -> str:
    return f"model.layers.{layer}.self_attn.head_out"


class PASLM:
    """PAlign's ``PASLM`` over a loaded model (see the module docstring for what differs)."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_file: str = "", seed: int = 0
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = model.config
        self.device = model.device
        self.model_file = model_file or str(getattr(model, "name_or_path", ""))
        self.spec = get_arch_spec(model)
        self.seed = seed
        self.system_prompt = DEFAULT_SYSTEM_PROMPT
        self._handle: SteeringHandle | None = None

    def __call__(self, input_ids: torch.Tensor) -> Any:
        with torch.no_grad():
            return self.model(input_ids.to(self.device))

    # ---- activations ----------------------------------------------------------------------------
    def preprocess_activate_dataset(
        self, dataset: Sequence[Mapping[str, str]], system_prompt: str = DEFAULT_SYSTEM_PROMPT
    ) -> list[np.ndarray]:
        self.system_prompt = system_prompt
        questions = [chat_input_ids(self.tokenizer, single_turn(row["question"], system_prompt)) for row in dataset]
        bank = ContextBank.build(self.model, questions, description="Encoding questions")
        per_prompt: list[np.ndarray | None] = [None] * (2 * len(dataset))
        for offset, key in ((0, "answer_matching_behavior"), (1, "answer_not_matching_behavior")):
            answers = [list(self.tokenizer(row[key], add_special_tokens=False)["input_ids"]) for row in dataset]
            if any(not a for a in answers):
                raise ConfigError(f"an empty {key} cannot be read at its answer token")
            for length in sorted({len(a) for a in answers}):
                rows = [i for i, a in enumerate(answers) if len(a) == length]
                with capture_last_token(self.model, self.spec) as records:
                    bank.run(self.model, [answers[i] for i in rows], rows)
                acts = stack_records(records)  # (n, L, H, D)
                for n, i in enumerate(rows):
                    per_prompt[2 * i + offset] = acts[n].reshape(self.spec.num_layers, -1).numpy()
        for i in range(len(dataset)):
            if np.array_equal(per_prompt[2 * i], per_prompt[2 * i + 1]):
                raise ConfigError(f"item {i}: the two answers give identical activations at the read position")
        return [a for a in per_prompt if a is not None]

    def get_activations(
        self,
        all_head_wise_activations: Sequence[np.ndarray] | np.ndarray,
        labels: Sequence[int],
        num_to_intervene: int = 48,
    ) -> dict[str, list[tuple[int, np.ndarray, float]]]:
        """Top heads, unit directions and stds from (prompt, layers, heads*head_dim) activations and labels.

        Consecutive prompts (0, 1), (2, 3), ... are one item's two answers, as PAlign builds them; they
        stay on the same side of the probe validation split.
        """
        acts = torch.as_tensor(np.asarray(all_head_wise_activations), dtype=torch.float32)
        spec = self.spec
        if acts.dim() != 3 or acts.shape[1:] != (spec.num_layers, spec.q_size):
            raise ConfigError(
                f"activations must be (prompts, {spec.num_layers}, {spec.q_size}), got {tuple(acts.shape)}"
            )
        y = torch.as_tensor(list(labels), dtype=torch.float32)
        if y.shape[0] != acts.shape[0]:
            raise ConfigError(f"{acts.shape[0]} activations but {y.shape[0]} labels")
        if num_to_intervene > spec.num_layers * spec.num_heads:
            raise ConfigError(f"num_to_intervene {num_to_intervene} exceeds {spec.num_layers * spec.num_heads} heads")
        x = acts.reshape(acts.shape[0], spec.num_layers * spec.num_heads, spec.head_dim)
        groups = torch.arange(acts.shape[0]) // 2
        ranking = probe_scores(x, y, groups, seed=self.seed).ranking()[:num_to_intervene]
        directions = com_directions(x[:, ranking], y)
        stds = projection_std(x[:, ranking], directions)
        interventions: dict[str, list[tuple[int, np.ndarray, float]]] = {}
        for idx, direction, std in zip(ranking.tolist(), directions, stds, strict=True):
            layer, head = divmod(idx, spec.num_heads)
            interventions.setdefault(head_out_name(layer), []).append((head, direction.numpy(), float(std)))
        return {name: sorted(entries, key=lambda e: e[0]) for name, entries in sorted(interventions.items())}

    # ---- intervention ---------------------------------------------------------------------------
    def steering_from(self, interventions: Mapping[str, Sequence[tuple[int, Any, float]]], alpha: float) -> Steering:
        heads, directions, stds = [], [], []
        for name, entries in interventions.items():
            match = _HEAD_OUT.match(name)
            if match is None:
                raise ConfigError(f"intervention key {name!r} is not 'model.layers.<i>.self_attn.head_out'")
            for head, direction, std in entries:
                heads.append((int(match.group(1)), int(head)))
                directions.append(torch.as_tensor(np.asarray(direction), dtype=torch.float32).reshape(-1))
                stds.append(float(std))
        spec = self.spec
        return Steering(
            tuple(heads),
            torch.stack(directions),
            torch.tensor(stds),
            float(alpha),
            spec.num_layers,
            spec.num_heads,
            spec.head_dim,
            "all",
        )

    def set_activate(self, interventions: Mapping[str, Sequence[tuple[int, Any, float]]], alpha: float) -> None:
        """Replace any current intervention by this one (every position, like PAlign's bias)."""
        self.reset_all()
        if interventions:
            self._handle = self.steering_from(interventions, alpha).apply(self.model)

    def reset_all(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    # ---- generation -----------------------------------------------------------------------------
    def generate(
        self, text: Sequence[Sequence[int]], max_length: int = 512, max_new_tokens: int | None = None
    ) -> list[list[int]]:
        """Greedy answers for token-id prompts; returns each prompt followed by its new tokens."""
        prompts = [list(t) for t in text]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        new = max_new_tokens if max_new_tokens is not None else max(1, max_length - width)
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=pad)
        results = []
        for p, row in zip(prompts, out[:, width:].tolist(), strict=True):
            answer = []
            for tok in row:
                if tok == pad or tok == self.tokenizer.eos_token_id:
                    break
                answer.append(tok)
            results.append(p + answer)
        return results


def get_model(
    model_name: str = "qwen2.5-coder-0.5b-instruct",
    use_bit_4: bool = False,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
) -> tuple[PASLM, PreTrainedTokenizerBase]:
    """PAlign's ``get_model``: any model memalign loads (preset, .gguf, local dir, hub id), any supported family."""
    if use_bit_4 or adapter:
        raise ConfigError(
            "use_bit_4 and adapter are not supported by the compat layer; load the model with "
            "memalign.load_model / transformers and wrap it in PASLM(model, tokenizer)"
        )
    model, tokenizer = load_model(model_name, dtype=dtype, device=device)
    lm = PASLM(model, tokenizer, model_name)
    lm.reset_all()
    return lm, tokenizer
