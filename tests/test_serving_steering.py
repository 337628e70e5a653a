"""Per-row steering: one forward, a different persona per row, equal to each row run alone."""

from __future__ import annotations

import pytest
import torch

from memalign.errors import ConfigError, UnknownNameError
from memalign.models.arch import get_arch_spec
from memalign.persona.row_steering import RowSteering
from memalign.persona.steering import Steering
from memalign.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_steering(model: torch.nn.Module, seed: int, positions: str = "all", alpha: float = 6.0) -> Steering:
    """A steering on a few random heads of ``model``, strong enough to change its outputs."""
    spec = get_arch_spec(model)
    gen = torch.Generator().manual_seed(seed)
    heads = [(layer, head) for layer in range(spec.num_layers) for head in range(spec.num_heads)]
    picked = [heads[i] for i in torch.randperm(len(heads), generator=gen)[:3].tolist()]
    directions = torch.randn(len(picked), spec.head_dim, generator=gen)
    directions /= directions.norm(dim=-1, keepdim=True)
    return Steering(
        tuple(picked),
        directions,
        torch.rand(len(picked), generator=gen) + 0.5,
        alpha,
        spec.num_layers,
        spec.num_heads,
        spec.head_dim,
        positions,
    )


def _last_logits(model, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).logits[:, -1]


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_three_rows_with_three_personas_equal_three_runs_alone(kind):
    model = tiny_model(kind)
    personas = {
        "ann": random_steering(model, 1),
        "bob": random_steering(model, 2, positions="generated"),
        "cat": random_steering(model, 3, alpha=-4.0),
    }
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 500, (n,), generator=gen) for n in (7, 5, 9)]
    alone = []
    for name, prompt in zip(personas, prompts, strict=True):
        with personas[name].apply(model):
            alone.append(_last_logits(model, prompt[None])[0])
    # one left-padded batch, each row its own persona
    width = max(len(p) for p in prompts)
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :], mask[i, width - len(prompt) :] = prompt, 1
    rows = RowSteering(personas)
    with rows.apply(model):
        rows.select(list(personas))
        batched = _last_logits(model, ids, mask)
    for i in range(3):
        torch.testing.assert_close(batched[i], alone[i], atol=1e-4, rtol=1e-4)
    # the personas matter, and leaving the block restores the model exactly
    plain = _last_logits(model, prompts[0][None])[0]
    assert not torch.allclose(plain, alone[0], atol=1e-3)
    torch.testing.assert_close(_last_logits(model, prompts[0][None])[0], plain, atol=0, rtol=0)


def test_row_without_persona_is_untouched_and_bad_selections_are_refused():
    model = tiny_model("qwen3")
    rows = RowSteering({"ann": random_steering(model, 1)})
    ids = torch.randint(3, 500, (2, 6), generator=torch.Generator().manual_seed(1))
    plain = _last_logits(model, ids)
    with rows.apply(model):
        rows.select([None, "ann"])
        mixed = _last_logits(model, ids)
        torch.testing.assert_close(mixed[0], plain[0], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(mixed[1], plain[1], atol=1e-3)
        with pytest.raises(UnknownNameError, match="known: ann"):
            rows.select(["zed"])
        rows.select(["ann"])
        with pytest.raises(ConfigError, match="one persona per row"):
            _last_logits(model, ids)
