"""Per-person fit on a tiny model: CV over training items only, artifacts, scoring paths, compat layer."""

from __future__ import annotations

import pytest
import torch

from memalign.errors import ConfigError, DataError, MemalignError
from memalign.persona import (
    FitConfig,
    Instrument,
    Item,
    PersonaAligner,
    PromptConfig,
    QuestionnaireSession,
    SubjectAnswers,
    fit_steering,
    load_steering,
    read_steering,
    save_steering,
)
from memalign.persona.prompts import contrast_answer_ids, option_token_ids
from memalign.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# A short template keeps the tiny-model prompts (byte-level BPE) short and the suite fast.
SHORT = PromptConfig(
    question_template="You {statement}.\n{options}\n", option_line="({letter}) {label}", system_prompt="Answer."
)
TEXTS = [
    "worry about things",
    "make friends easily",
    "have a vivid imagination",
    "trust others",
    "complete tasks",
    "get angry easily",
    "love large parties",
    "believe in art",
    "cheat to get ahead",
    "like order",
    "panic easily",
    "avoid crowds",
    "dislike change",
    "help others",
    "waste time",
    "feel blue",
    "talk a lot",
    "read poems",
    "insult people",
    "work hard",
]
ITEMS = Instrument(
    "tiny-20",
    tuple(Item(i + 1, t, "NEOAC"[i % 5], "NEOAC"[i % 5] + "1", 1 if i % 3 else -1) for i, t in enumerate(TEXTS)),
)
TRAIN, TEST = ITEMS.ids[:14], ITEMS.ids[14:]
FAST = FitConfig(k=3, k_grid=(), alpha_grid=(0.0, 2.0, 8.0), cv_folds=3, probe_folds=2)


@pytest.fixture(scope="module")
def setup():
    model, tok = tiny_model("qwen3"), tiny_tokenizer()
    aligner = PersonaAligner(
        model,
        tok,
        ITEMS.subset(TRAIN).items,
        instrument="tiny",
        prompt_config=SHORT,
        fit_config=FAST,
        cache=False,
        batch_size=8,
    ).prepare()
    return model, tok, aligner


def person(seed: int, test_value: int | None = None) -> SubjectAnswers:
    gen = torch.Generator().manual_seed(seed)
    raw = {i: int(v) for i, v in zip(ITEMS.ids, torch.randint(1, 6, (len(ITEMS),), generator=gen), strict=True)}
    if test_value is not None:
        raw.update({i: test_value for i in TEST})
    return SubjectAnswers(f"p{seed}", raw)


def test_prompt_contract_on_tiny_tokenizer():
    tok = tiny_tokenizer()
    agree, disagree = contrast_answer_ids(tok, SHORT)
    assert agree[-1] != disagree[-1]
    assert all(len(ids) >= 1 for ids in option_token_ids(tok, SHORT))
    with pytest.raises(ConfigError, match="end in the same token"):
        contrast_answer_ids(tok, PromptConfig(answer_format="{letter} Answer:"))


GEMMA_LIKE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<turn>{{ m['role'] }}\n{{ m['content'] }}</turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<turn>model\n{% endif %}"
)


def test_question_prompts_go_through_the_shared_chat_helper():
    from memalign.chat_format import chat_input_ids, single_turn
    from memalign.persona.prompts import question_prompt_ids, statement_text

    item = ITEMS.item(1)
    question = SHORT.question(statement_text(item))
    tok = tiny_tokenizer()
    ids = question_prompt_ids(tok, item, SHORT)
    assert ids == chat_input_ids(tok, single_turn(question, "Answer."))
    assert tok.decode(ids).endswith(f"{question}<|im_end|>\n<|im_start|>assistant\n")
    decided = tok.decode(question_prompt_ids(tok, item, SHORT, system="Be brief.", decided="B"))
    assert "system\nBe brief." in decided and f"{question}Answer (B).<|im_end|>" in decided
    # a template that refuses a system turn gets it folded into the user turn
    tok.chat_template = GEMMA_LIKE
    folded = tok.decode(question_prompt_ids(tok, item, SHORT))
    assert folded == f"<turn>user\nAnswer.\n\n{question}</turn>\n<turn>model\n"
    # a base model (no template) gets chat_format's plain fallback: turns separated by blank lines
    tok.chat_template = None
    assert tok.decode(question_prompt_ids(tok, item, SHORT, system="Be brief.")) == f"Be brief.\n\n{question}\n\n"


def test_fit_picks_from_grid_and_reports_cv(setup):
    _, _, aligner = setup
    result = aligner.fit(person(1))
    assert result.alpha in FAST.alpha_grid and result.k == 3 and result.steering.k == 3
    assert set(result.cv_mae) == {(3, a) for a in FAST.alpha_grid}
    assert result.best_cv_mae == min(result.cv_mae.values())
    assert result.steering.meta["subject_id"] == "p1" and result.steering.meta["instrument"] == "tiny"
    assert result.steering.positions == "generated" and len(result.head_accuracy) == 3


def test_test_answers_never_reach_the_fit(setup):
    """Poison the held-out answers: the steering and the whole CV table must not change."""
    model, tok, aligner = setup
    a, b = aligner.fit(person(2, test_value=1)), aligner.fit(person(2, test_value=5))
    assert a.cv_mae == b.cv_mae and a.alpha == b.alpha and a.steering.heads == b.steering.heads
    assert torch.equal(a.steering.directions, b.steering.directions)
    # The lower-level API restricts to the session's (training) items by construction as well.
    raw = dict(person(2).raw)
    poisoned = {**raw, **{i: 1 for i in TEST}}
    c = fit_steering(aligner.session, aligner.activations, raw, FAST)
    d = fit_steering(aligner.session, aligner.activations, poisoned, FAST)
    assert c.cv_mae == d.cv_mae and torch.equal(c.steering.stds, d.steering.stds)


def test_k_chosen_by_cv_and_too_few_answers(setup):
    _, _, aligner = setup
    result = aligner.fit(person(3), FitConfig(k_grid=(1, 4), alpha_grid=(0.0, 4.0), cv_folds=2, probe_folds=2))
    assert result.k in (1, 4) and {k for k, _ in result.cv_mae} == {1, 4}
    neutral = SubjectAnswers("n", {i: 3 for i in ITEMS.ids})
    with pytest.raises(DataError, match="non-neutral"):
        aligner.fit(neutral)


def test_generated_sweep_equals_per_steering_scoring(setup):
    _, _, aligner = setup
    steering = aligner.fit(person(4)).steering
    session = aligner.session
    items = list(TRAIN[:5])
    direct = session.score(steering, alpha=5.0, item_ids=items).expected
    shifts = {layer: s.expand(len(items), -1) for layer, s in steering.layer_shifts(5.0).items()}
    swept = session.score_rows(items, shifts).expected
    assert torch.allclose(direct, swept, atol=1e-5)


def test_all_positions_scoring_matches_full_forward(setup):
    model, tok, aligner = setup
    session = aligner.session
    steering = aligner.fit(person(5)).steering
    items = list(TRAIN[:3])
    scores = session.score(steering, alpha=3.0, item_ids=items, positions="all")
    with steering.apply(model, alpha=3.0, positions="all"), torch.no_grad():
        for n, item_id in enumerate(items):
            ids = torch.tensor([session.questions[session.item_ids.index(item_id)]])
            want = session.scorer(model(ids).logits[:, -1], [item_id])
            assert torch.allclose(scores.probs[n], want.probs[0], atol=1e-5)


def test_artifact_round_trip_and_refusals(setup, tmp_path):
    model, tok, aligner = setup
    steering = aligner.fit(person(6)).steering
    save_steering(steering, tmp_path / "s")
    loaded = load_steering(tmp_path / "s", model)
    assert loaded.heads == steering.heads and loaded.alpha == steering.alpha
    assert torch.equal(loaded.directions, steering.directions) and loaded.positions == steering.positions
    assert loaded.meta["library_version"] and loaded.meta["num_heads"] == 4
    ids = torch.tensor([aligner.session.questions[0]])
    with torch.no_grad(), steering.apply(model):
        a = model(ids).logits
    with torch.no_grad(), loaded.apply(model):
        b = model(ids).logits
    assert torch.equal(a, b)
    other = tiny_model("qwen3", seed=1)  # same dims, other weights
    with pytest.raises(MemalignError, match="fingerprint"):
        load_steering(tmp_path / "s", other)
    assert load_steering(tmp_path / "s", other, strict=False).heads == steering.heads
    with pytest.raises(MemalignError, match="fit on a model with"):
        load_steering(tmp_path / "s", tiny_model("llama"))
    (tmp_path / "s" / "steering.json").write_text("{}")
    with pytest.raises(DataError, match="unknown format"):
        read_steering(tmp_path / "s")


def test_session_scores_unsteered_items(setup):
    model, tok, _ = setup
    session = QuestionnaireSession(model, tok, ITEMS.subset(TEST).items, SHORT, cache=False)
    scores = session.score()
    assert scores.item_ids == TEST
    assert torch.allclose(scores.probs.sum(-1), torch.ones(len(TEST)))
    assert ((scores.expected >= 1) & (scores.expected <= 5)).all()
    assert set(scores.argmax.tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ((scores.mass > 0) & (scores.mass <= 1)).all()


def test_session_disk_cache_reuses_bank_and_activations(isolated_cache):
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    items = ITEMS.subset(TRAIN[:4]).items
    first = QuestionnaireSession(model, tok, items, SHORT)
    acts, scores = first.capture(), first.score()
    files = sorted(p.name for p in isolated_cache.rglob("*.safetensors"))
    assert len(files) == 2
    second = QuestionnaireSession(model, tok, items, SHORT)
    assert torch.equal(second.capture().agree, acts.agree)
    assert torch.allclose(second.score().probs, scores.probs)
    assert sorted(p.name for p in isolated_cache.rglob("*.safetensors")) == files


def test_compat_layer_palign_flow():
    from memalign.persona import compat
    from memalign.persona.palign_compat import PASLM, get_model

    assert compat.get_model is get_model and compat.PASLM is PASLM  # the name docs/persona.md uses
    lm, tok = get_model("tiny:qwen3")
    dataset = [
        {"question": f"You {t}.", "answer_matching_behavior": "A", "answer_not_matching_behavior": "E"}
        for t in TEXTS[:8]
    ]
    acts = lm.preprocess_activate_dataset(dataset)
    assert len(acts) == 16 and acts[0].shape == (2, 4 * 32)
    labels = [1, 0, 0, 1] * 4
    interventions = lm.get_activations(acts, labels, num_to_intervene=3)
    assert sum(len(v) for v in interventions.values()) == 3
    assert all(key.startswith("model.layers.") and key.endswith(".self_attn.head_out") for key in interventions)
    ids = torch.tensor([tok("You worry.")["input_ids"]])
    base = lm(ids).logits
    lm.set_activate(interventions, 4.0)
    assert not torch.allclose(lm(ids).logits, base)
    lm.set_activate(interventions, 0.0)
    assert torch.equal(lm(ids).logits, base)
    lm.reset_all()
    assert torch.equal(lm(ids).logits, base)
    out = lm.generate([ids[0].tolist()], max_new_tokens=3)
    assert out[0][: ids.shape[1]] == ids[0].tolist() and len(out[0]) <= ids.shape[1] + 3


def test_decision_read_captures_at_the_predicting_position(isolated_cache):
    from dataclasses import replace

    model, tok = tiny_model("llama"), tiny_tokenizer()
    items = ITEMS.subset(TRAIN[:6]).items
    answer = QuestionnaireSession(model, tok, items, replace(SHORT, read="answer")).capture()
    decision_session = QuestionnaireSession(model, tok, items, replace(SHORT, read="decision"))
    decision = decision_session.capture()
    assert decision.shape == answer.shape and not torch.equal(decision.agree, answer.agree)
    assert not torch.equal(decision.agree, decision.disagree)
    # Read at the last token of "question + Answer (A).": the same heads a one-row forward records.
    from memalign.persona.capture import capture_last_token
    from memalign.persona.prompts import question_prompt_ids

    ids = question_prompt_ids(tok, items[0], decision_session.config, decided="A")
    with torch.no_grad(), capture_last_token(model) as records:
        model(torch.tensor([ids]))
    assert torch.allclose(torch.stack([r[0][0] for r in records]), decision.agree[0], atol=1e-4)
    with pytest.raises(ConfigError, match="read must be one of"):
        PromptConfig(read="token")


def test_fit_with_all_positions_policy(setup):
    _, _, aligner = setup
    config = FitConfig(k=2, k_grid=(), alpha_grid=(0.0, 4.0), cv_folds=2, probe_folds=2, positions="all")
    result = aligner.fit(person(7), config)
    assert result.steering.positions == "all" and set(result.cv_mae) == {(2, 0.0), (2, 4.0)}
