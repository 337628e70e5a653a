"""Every scorer against hand-computed examples (the values in comments are worked out by hand)."""

from __future__ import annotations

import random

import pytest

from memalign.bench.metrics import METRICS, fuzz_ratio, rouge_l_longbench, score_prediction
from memalign.errors import ConfigError


def s(metric, prediction, answers, **meta):
    return score_prediction(metric, prediction, answers, meta)


def test_ruler_string_match():
    # 2 of the 3 gold strings appear (case-insensitive); part = any of them.
    assert s("string_match_all", "The numbers are 123 and 456", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert s("string_match_part", "The numbers are 123 and 456", ["123", "456", "789"]) == 1.0
    assert s("string_match_all", "ABC-def", ["abc-DEF"]) == 1.0
    assert s("string_match_part", "nothing", ["x1", "x2"]) == 0.0


def test_first_int_match_is_exact_on_the_first_number():
    assert s("first_int_match", "The pass key is 04231. Remember", ["04231"]) == 1.0
    assert s("first_int_match", "1234 then 12345", ["12345"]) == 0.0  # only the first number counts
    assert s("first_int_match", "no digits", ["1"]) == 0.0


def test_kv_retrieval_needs_the_whole_word():
    assert s("kv_retrieval", 'The value is "abc-def".', ["abc-def"]) == 1.0
    assert s("kv_retrieval", "abc-defg", ["abc-def"]) == 0.0


def test_math_find_first_number():
    assert s("math_find", "The largest is 95.", [95]) == 1.0
    assert s("math_find", "It is 95.5", [95.5]) == 1.0
    assert s("math_find", "It is 96", [95]) == 0.0


def test_longbook_choice():
    assert s("longbook_choice", "B. because", ["some option", "B"]) == 1.0
    assert s("longbook_choice", "The answer is: C", ["opt", "C"]) == 1.0  # after the prefix comes "C"
    assert s("longbook_choice", "I think so", ["opt", "A"]) == 0.0


def test_code_debug_rules_including_seeded_guess():
    assert s("code_debug", "B.", ["func_x", "B"]) == 1.0
    assert s("code_debug", "The answer is: func_x", ["func_x", "B"]) == 1.0
    guess = random.Random("func_x").choice(["A", "B", "C", "D"])
    for letter in "ABCD":
        assert s("code_debug", "no idea", ["func_x", letter]) == float(letter == guess)


def test_qa_f1_hand_example():
    # normalised: "eiffel tower" vs "eiffel tower in paris": 2 common, P=1, R=1/2 -> F1 = 2/3
    assert s("qa_f1", "The Eiffel Tower!", ["eiffel tower in Paris"]) == pytest.approx(2 / 3)
    assert s("qa_f1", "Paris", ["London", "paris"]) == 1.0  # max over gold answers
    assert s("qa_f1", "", ["x"]) == 0.0


def test_rouge_l_longbench_hand_example():
    # unique words: hyp {the,cat,sat,on,mat} n=5, ref {the,cat,is,on,mat} m=5; LCS "the cat on the mat"
    # as a word set {the,cat,on,mat} = 4 -> R = P = 4/5 -> F = 0.8
    assert rouge_l_longbench("the cat sat on the mat", "the cat is on the mat") == pytest.approx(0.8, abs=1e-6)
    # two reference sentences: LCS with "a b" gives {a,b}, with "c d" gives {c}; union 3 of m=4, n=3 -> F=6/7
    assert rouge_l_longbench("a b c", "a b. c d") == pytest.approx(2 * 0.75 * 1 / 1.75, abs=1e-6)
    assert rouge_l_longbench("", "a b") == 0.0  # the rouge package raises; LongBench scores 0
    assert s("rouge_l", "the cat sat on the mat", ["x y", "the cat is on the mat"]) == pytest.approx(0.8, abs=1e-6)


def test_classification_and_first_line():
    classes = ["Animal", "Abbreviation", "Food"]
    assert s("classification", "Type: Animal", ["Animal"], all_classes=classes) == 1.0
    assert s("classification", "Animal or Food", ["Animal"], all_classes=classes) == 0.5  # 1/k of found classes
    assert s("classification", "Food", ["Animal"], all_classes=classes) == 0.0
    # LongBench scores trec/triviaqa/samsum on the first line only
    assert s("classification", "\nAnimal\nFood", ["Animal"], all_classes=classes, first_line=True) == 1.0
    assert s("classification", "\nAnimal\nFood", ["Animal"], all_classes=classes) == 0.5


def test_retrieval_and_count_share_of_numbers():
    assert s("retrieval", "Paragraph 12 and 3", ["Paragraph 12"]) == 0.5
    assert s("retrieval", "Paragraph 12", ["Paragraph 12"]) == 1.0
    assert s("count", "There are 7 unique paragraphs", ["7"]) == 1.0
    assert s("count", "7 or 8", ["7"]) == 0.5
    with pytest.raises(ConfigError):
        s("retrieval", "1", ["no paragraph here"])


def test_code_sim_skips_fences_and_comments():
    assert s("code_sim", "```python\n# comment\n    return x + 1\n", ["    return x + 1"]) == 1.0
    # difflib: 2 matching chars of 3+3 -> ratio 4/6 -> round(66.7) = 67 percent
    assert fuzz_ratio("abc", "abd") == 67
    assert s("code_sim", "abc", ["abd"]) == pytest.approx(0.67)
    assert fuzz_ratio("", "x") == 0 and fuzz_ratio("same", "same") == 100


def test_rouge1_recall_for_the_needle():
    gold = "eat a sandwich and sit in Dolores Park on a sunny day"  # 12 words, "a" twice
    # found: eat, a (once), sandwich, in, park -> 5 / 12
    assert s("rouge1_recall", "Eat a sandwich in the park.", [gold]) == pytest.approx(5 / 12)
    assert s("rouge1_recall", f"Definitely: {gold}!", [gold]) == 1.0


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown metric"):
        s("nope", "x", ["x"])
    assert {"string_match_all", "qa_f1", "rouge_l", "code_sim", "kv_retrieval"} <= set(METRICS)


def test_metric_registry_refuses_a_second_scorer_under_one_name():
    from memalign.bench.metrics import get_metric, register_metric
    from memalign.errors import DuplicateNameError, UnknownNameError
    from memalign.registry import Registry

    assert isinstance(METRICS, Registry) and get_metric("qa_f1") is METRICS["qa_f1"]
    with pytest.raises(DuplicateNameError, match="metric 'qa_f1' is already registered"):
        register_metric("qa_f1")(lambda prediction, answers, meta: 0.0)
    assert s("qa_f1", "the cat", ["cat"]) == 1.0  # the original scorer is still the one used
    with pytest.raises(UnknownNameError, match=r"unknown metric 'nope'; known: string_match_all, "):
        get_metric("nope")
