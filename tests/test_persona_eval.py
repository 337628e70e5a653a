"""``memalign persona eval``: answer parsing, metrics, calibration, every mode on a tiny model, resume, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_persona_fit import ITEMS, SHORT  # the same 20-item instrument and short template
from typer.testing import CliRunner

from memalign.cli import app
from memalign.errors import ConfigError
from memalign.persona import FitConfig, ItemSplit, PromptConfig, SubjectAnswers
from memalign.persona.evaluation import (
    MODES,
    EvalSetup,
    calibrate,
    parse_answer,
    parse_modes,
    profile_text,
    resolve_mode,
    run_eval,
    subject_record,
    summarize,
)
from memalign.persona.evaluation.report import load_results, markdown_table
from memalign.persona.prompts import LIKERT_OPTIONS
from memalign.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SPLIT = ItemSplit(ITEMS.ids[:14], ITEMS.ids[14:])
FAST = FitConfig(k=3, k_grid=(), alpha_grid=(-2.0, 0.0, 2.0, 8.0), cv_folds=3, probe_folds=2)


def person(seed: int) -> SubjectAnswers:
    gen = torch.Generator().manual_seed(seed)
    raw = {i: int(v) for i, v in zip(ITEMS.ids, torch.randint(1, 6, (len(ITEMS),), generator=gen), strict=True)}
    return SubjectAnswers(f"p{seed}", raw)


POPULATION = [person(s) for s in range(6)]


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("(A) Very Accurate", 5),
        ("B", 4),
        ("C.", 3),
        ("**D**", 2),
        ("E)", 1),
        ("Answer: (B)", 4),
        ("I'd say Moderately Inaccurate.", 2),
        ("The answer is (C)", 3),
        ("The", None),
        ("Each of them", None),
        ("Very Accurate or Very Inaccurate", None),
        ("", None),
        ("I cannot answer that.", None),
    ],
)
def test_parse_answer_is_strict(reply, value):
    # PAlign's regex read "The ..." as E and "I'd say" as D; here they are unparsed (counted, not guessed).
    assert parse_answer(reply, LIKERT_OPTIONS) == value


def test_subject_record_excludes_missing_and_counts_unparsed():
    p = SubjectAnswers("x", {15: 5, 16: 1, 17: None, 18: 4, 19: 2, 20: 3})
    expected = {15: 4.0, 16: None, 17: 3.0, 18: 4.0, 19: 1.0, 20: 3.0}
    rec = subject_record(p, SPLIT.test, ITEMS, expected, expected, "midpoint")
    # domains: 15->N? ids 15..20 -> index 14..19 -> "NEOAC"[i % 5]: C, N, E, O, A, C
    assert rec["n_missing_answers"] == 1 and rec["n_unparsed"] == 1 and rec["n_scored"] == 5
    assert rec["trait_mae"] == {"A": 1.0, "C": 0.5, "N": 2.0, "O": 0.0}  # 16 unparsed -> 3 vs raw 1
    assert math.isclose(rec["trait_sum"], 3.5)
    excluded = subject_record(p, SPLIT.test, ITEMS, expected, expected, "exclude")
    assert excluded["n_scored"] == 4 and "N" not in excluded["trait_mae"]
    summary = summarize([rec, {**rec, "trait_mae": {**rec["trait_mae"], "A": 0.0}, "seconds": 1.0}])
    assert summary["score"]["mean_A_abs"] == 0.5 and summary["score"]["std_A_abs"] == 0.5
    assert {"mean_C", "std_C", "mean_C_abs", "std_C_abs", "sum_abs"} <= set(summary["score"])
    assert summary["n_unparsed"] == 2


def test_calibration_recovers_a_linear_person_and_uses_training_items_only():
    # keyed person answer = 2 * keyed model answer - 3 on every item (both keyings)
    def keyed(v, i):
        return v if ITEMS.item(i).keyed > 0 else 6 - v

    model = {i: 2.0 + (i % 3) * 0.5 for i in ITEMS.ids}
    raw = {i: int(round(keyed(2 * keyed(model[i], i) - 3, i))) for i in ITEMS.ids}
    p = SubjectAnswers("lin", raw)
    train = {i: model[i] for i in SPLIT.train}
    test = {i: model[i] for i in SPLIT.test}
    out, lines = calibrate(train, test, p, ITEMS, l2=0.0)
    for i in SPLIT.test:
        assert out[i] == pytest.approx(min(5, max(1, raw[i])), abs=1e-9)
    assert all(line[1] == pytest.approx(2.0) for line in lines.values() if line[1] != 0)
    poisoned = SubjectAnswers("lin", {**raw, **{i: 1 for i in SPLIT.test}})
    assert calibrate(train, test, poisoned, ITEMS, l2=0.0)[0] == out  # test answers never read


def test_profile_is_raw_direction_and_skips_missing():
    p = SubjectAnswers("q", {1: 5, 2: None, 3: 1})
    text = profile_text(p, ITEMS, (1, 2, 3))
    assert "worry about things:Very Accurate" in text and "have a vivid imagination:Very Inaccurate" in text
    assert "make friends easily" not in text


def test_mode_names_and_groups():
    assert resolve_mode("no_change") == "NO_CHANGE" and resolve_mode("FEW_SHOT") == "few-shot"
    assert resolve_mode("constant") == "always-3"
    assert "oracle-alpha" not in parse_modes("all") and "oracle-alpha" in parse_modes("llm")
    assert set(parse_modes("predictors")) == {"always-3", "item-mean", "own-facet-mean", "ridge"}
    with pytest.raises(ConfigError, match="unknown mode"):
        resolve_mode("DPO")


@pytest.fixture(scope="module")
def tiny_setup():
    model, tok = tiny_model("qwen3"), tiny_tokenizer()
    prompts = {p.subject_id: f"You are person {p.subject_id}, calm and curious." for p in POPULATION}
    return EvalSetup(
        ITEMS,
        SPLIT,
        POPULATION,
        model,
        tok,
        prompt_config=SHORT,
        fit_config=FAST,
        personality_prompts=prompts,
        cache=False,
    )


def test_every_mode_runs_and_resumes(tiny_setup, tmp_path, monkeypatch):
    modes = parse_modes("all") + ["oracle-alpha"]
    paths = run_eval(tiny_setup, modes, POPULATION[:2], tmp_path, "tiny:qwen3")
    assert set(paths) == set(MODES)
    for mode, path in paths.items():
        assert path.name == f"{mode}_tiny-qwen3_OOD.json"
        doc = json.loads(path.read_text())
        assert doc["n_subjects"] == 2 and {f"mean_{t}_abs" for t in "ACENO"} <= set(doc["score"])
        assert all(len(r["predictions"]) == len(SPLIT.test) for r in doc["records"])
    docs = {d["mode"]: d for d in load_results([tmp_path])}
    records = {m: {r["subject"]: r for r in d["records"]} for m, d in docs.items()}
    for sid in ("p0", "p1"):
        # the oracle sees the test answers, so it is never worse than PAS's CV choice from the same grid
        assert records["oracle-alpha"][sid]["trait_sum"] <= records["PAS"][sid]["trait_sum"] + 1e-9
        assert records["PAS"][sid]["info"]["alpha"] in FAST.alpha_grid
    # NO_CHANGE answers everyone alike; the profile prompt makes the answers depend on the person
    assert records["NO_CHANGE"]["p0"]["predictions"] == records["NO_CHANGE"]["p1"]["predictions"]
    assert records["few-shot"]["p0"]["predictions"] != records["few-shot"]["p1"]["predictions"]
    assert "| ridge |" in markdown_table(list(docs.values()))

    # resume: nothing is recomputed for finished subjects, a new subject is added
    calls = []
    for cls in MODES.values():
        monkeypatch.setattr(
            cls,
            "predict",
            lambda self, setup, p, _orig=cls.predict: calls.append(p.subject_id) or _orig(self, setup, p),
        )
    run_eval(tiny_setup, modes, POPULATION[:3], tmp_path, "tiny:qwen3")
    assert set(calls) == {"p2"}
    assert json.loads(paths["PAS"].read_text())["n_subjects"] == 3
    with pytest.raises(ConfigError, match="different run"):
        run_eval(tiny_setup, ["NO_CHANGE"], POPULATION[:1], tmp_path, "tiny:llama")


def test_generation_answering_counts_unparsed(tmp_path):
    setup = EvalSetup(
        ITEMS,
        SPLIT,
        POPULATION,
        tiny_model("qwen3"),
        tiny_tokenizer(),
        prompt_config=SHORT,
        fit_config=FAST,
        answering="generate",
        max_new_tokens=4,
        cache=False,
    )
    path = run_eval(setup, ["NO_CHANGE"], POPULATION[:1], tmp_path, "tiny")["NO_CHANGE"]
    rec = json.loads(path.read_text())["records"][0]
    nones = sum(v[0] is None for v in rec["predictions"].values())
    assert rec["n_unparsed"] == nones and rec["n_scored"] == len(SPLIT.test)  # midpoint: still scored
    assert nones > 0  # a random tiny model does not answer with a letter


def test_cli_eval_predictors_and_report(tmp_path):
    key = tmp_path / "key.csv"
    rows = ["full_id,short_id,sign,facet_key,facet,text"]
    for i in range(1, 21):
        sign = ("+" if i % 3 else "-") + "NEOAC"[i % 5] + "1"
        rows.append(f"{i},{i if i <= 12 else ''},{sign},{sign[1:]},Facet,Do thing number {i}.")
    key.write_text("\n".join(rows) + "\n")
    subjects = tmp_path / "subjects.json"
    gen = torch.Generator().manual_seed(0)
    subjects.write_text(
        json.dumps(
            [
                {"case": n, **{f"i{i}": int(torch.randint(1, 6, (1,), generator=gen)) for i in range(1, 21)}}
                for n in range(5)
            ]
        )
    )
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "persona",
            "eval",
            "--modes",
            "predictors",
            "--item-key",
            str(key),
            "--subjects",
            str(subjects),
            "--recoded",
            "--limit",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "ridge_no-model_OOD.json").is_file()
    result = runner.invoke(
        app,
        [
            "persona",
            "eval",
            "--modes",
            "PAS",
            "--item-key",
            str(key),
            "--subjects",
            str(subjects),
            "--recoded",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code != 0 and "need --model" in str(result.exception)
    result = runner.invoke(app, ["persona", "report", str(out), "--markdown", str(tmp_path / "t.md")])
    assert result.exit_code == 0, result.output
    assert (out / "trait_errors.png").is_file() and "always-3" in (tmp_path / "t.md").read_text()


def test_personality_prompt_written_by_the_model_when_no_file(tmp_path):
    setup = EvalSetup(
        ITEMS,
        SPLIT,
        POPULATION,
        tiny_model("qwen3"),
        tiny_tokenizer(),
        prompt_config=SHORT,
        fit_config=FAST,
        cache=False,
    )
    path = run_eval(setup, ["personality_prompt"], POPULATION[:1], tmp_path, "tiny")["personality_prompt"]
    info = json.loads(path.read_text())["records"][0]["info"]
    assert info["description_source"] == "generated by the model" and info["description_chars"] > 0


def test_labelled_variant_sits_beside_the_default(tiny_setup, tmp_path):
    run_eval(tiny_setup, ["NO_CHANGE"], POPULATION[:1], tmp_path, "tiny")
    other = EvalSetup(
        ITEMS,
        SPLIT,
        POPULATION,
        tiny_setup.model,
        tiny_setup.tokenizer,
        prompt_config=PromptConfig.from_dict({**SHORT.to_dict(), "read": "answer"}),
        fit_config=FAST,
        cache=False,
    )
    with pytest.raises(ConfigError, match="different run"):
        run_eval(other, ["NO_CHANGE"], POPULATION[:1], tmp_path, "tiny")
    paths = run_eval(other, ["NO_CHANGE"], POPULATION[:1], tmp_path, "tiny", label="read-answer")
    assert paths["NO_CHANGE[read-answer]"].name == "NO_CHANGE[read-answer]_tiny_OOD.json"
    assert {d["mode"] for d in load_results([tmp_path])} == {"NO_CHANGE", "NO_CHANGE[read-answer]"}
    with pytest.raises(ConfigError, match="label"):
        run_eval(other, ["NO_CHANGE"], POPULATION[:1], tmp_path, "tiny", label="a/b")


def test_mode_registry_names_aliases_and_refusals():
    import inspect
    from dataclasses import dataclass, is_dataclass

    from memalign.errors import DuplicateNameError, UnknownNameError
    from memalign.persona.evaluation import EvalMode, get_mode, register_mode
    from memalign.persona.evaluation import modes as modes_module

    known = r"known: NO_CHANGE, few-shot, .*ridge \(or 'all', 'llm', 'predictors'\)"
    with pytest.raises(UnknownNameError, match=known):
        resolve_mode("DPO")
    assert resolve_mode(" Pas_Calibration ") == "PAS+calibration" and resolve_mode("item_mean") == "item-mean"

    @dataclass
    class Extra(EvalMode):
        pass

    with pytest.raises(DuplicateNameError, match="'few_shot' is already registered"):
        register_mode("extra", "few_shot")(Extra)
    assert "extra" not in MODES and Extra.name == "" and MODES["few-shot"].__name__ == "FewShot"
    for name, cls in MODES.items():
        # one written class per mode, named as registered (a class made with type() has no source to show)
        assert cls.name == name and is_dataclass(cls) and cls.__module__ == modes_module.__name__
        assert f"class {cls.__name__}(" in inspect.getsource(cls)
    assert type(get_mode("PAS+calibration").base) is modes_module.PAS
    assert type(get_mode("calibrated").base) is modes_module.NoChange


def test_modes_module_keeps_the_names_imported_from_it():
    from memalign.persona.evaluation import calibration, modes, profiles, setup

    assert modes.EvalSetup is setup.EvalSetup and modes.ModePrediction is setup.ModePrediction
    assert modes.calibrate is calibration.calibrate and modes.profile_text is profiles.profile_text
    assert callable(modes.timed_predict) and modes.MODES is MODES


def test_summary_leaves_subjects_without_test_answers_out():
    answered = SubjectAnswers("a", {15: 5, 16: 1, 17: 2, 18: 4, 19: 2, 20: 3})
    blank = SubjectAnswers("b", {1: 4})  # answers on training items only
    predictions = {i: 3.0 for i in SPLIT.test}
    rec_a = subject_record(answered, SPLIT.test, ITEMS, predictions, predictions)
    rec_b = subject_record(blank, SPLIT.test, ITEMS, predictions, predictions)
    assert rec_b["n_scored"] == 0 and math.isnan(rec_b["trait_sum"]) and rec_b["trait_mae"] == {}
    both, alone = summarize([rec_a, rec_b]), summarize([rec_a])
    assert both["score"]["sum_abs"] == alone["score"]["sum_abs"] > 0  # not dragged toward a "perfect" 0
    assert both["score"]["std_sum_abs"] == alone["score"]["std_sum_abs"]
    assert (both["n_subjects"], both["n_scored_subjects"], both["unscored_subjects"]) == (2, 1, ["b"])
