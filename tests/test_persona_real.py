"""PAS on the real packaged Qwen2.5-Coder-0.5B-Instruct (slow: 16 + 8 items, 1-2 minutes on 2 CPU cores)."""

from __future__ import annotations

import pytest
import torch
from conftest import shared_data

from memalign import load_model
from memalign.persona import (
    FitConfig,
    PersonaAligner,
    PromptConfig,
    QuestionnaireSession,
    load_answers,
    load_ipip_neo_300,
    load_rewordings,
    load_split,
)
from memalign.persona.prompts import contrast_answer_ids, option_token_ids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qwen():
    return load_model("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="module")
def papi():
    ipip = load_ipip_neo_300(shared_data("papi", "ipip_neo_300_itemkey.csv"))
    split = load_split(shared_data("papi", "mpi_300_split.json"), ipip)
    rewordings = load_rewordings(shared_data("papi", "mpi_120.csv"), ipip)
    person = load_answers(shared_data("papi", "subjects_200.json"), ipip, recoded=True)[0]
    return ipip, split, rewordings, person


def test_option_tokens_and_contrast_on_qwen(qwen):
    _, tokenizer = qwen
    config = PromptConfig()
    ids = option_token_ids(tokenizer, config)
    assert all(len(v) == 3 for v in ids)  # "(A", "A" and " A" are single tokens
    agree, disagree = contrast_answer_ids(tokenizer, config)
    assert len(agree) == len(disagree) == 1 and agree != disagree


def test_fit_and_steer_a_real_subject(qwen, papi):
    model, tokenizer = qwen
    ipip, split, rewordings, person = papi
    aligner = PersonaAligner(
        model,
        tokenizer,
        ipip.subset(split.train[:16]).items,
        rewordings=rewordings,
        fit_config=FitConfig(k=8, k_grid=(), alpha_grid=(-4.0, 0.0, 4.0), cv_folds=2),
    )
    result = aligner.fit(person)
    assert result.best_cv_mae <= result.unsteered_cv_mae
    assert result.steering.meta["model_type"] == "qwen2"

    test = QuestionnaireSession(model, tokenizer, ipip.subset(split.test[:8]).items, rewordings=rewordings)
    base = test.score()
    assert float(base.mass.mean()) > 0.5  # the model answers with option tokens
    assert torch.equal(test.score(result.steering, alpha=0.0).probs, base.probs)
    moved = test.score(result.steering, alpha=4.0)
    assert (moved.expected - base.expected).abs().max() > 0.01
