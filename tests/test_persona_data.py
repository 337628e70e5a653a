"""Instruments, splits, rewordings and subject answers: recoding, scoring and every error path."""

from __future__ import annotations

import json

import pytest
from conftest import shared_data

from memalign.errors import ConfigError, DataError
from memalign.persona import (
    SubjectAnswers,
    answers_document,
    domain_scores,
    facet_scores,
    find_subject,
    load_answers,
    load_ipip_neo_120,
    load_ipip_neo_300,
    load_item_key,
    load_rewordings,
    load_split,
    palign_split,
    to_second_person,
)
from memalign.persona.instruments import ItemSplit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


KEY = """full_id,short_id,sign,facet_key,facet,text
1,1,+N1,N1,Anxiety,Worry about things.
2,,-N1,N1,Anxiety,Am relaxed most of the time.
3,2,+E1,E1,Friendliness,Make friends easily.
4,,-E1,E1,Friendliness,Keep others at a distance.
"""


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "key.csv"
    path.write_text(KEY)
    return path


@pytest.fixture
def instrument(key_file):
    return load_item_key(key_file)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_item_key_fields_and_short_form(instrument):
    assert instrument.ids == (1, 2, 3, 4)
    assert instrument.domains == ("N", "E")
    item = instrument.item(2)
    assert (item.keyed, item.facet_key, item.domain, item.sign, item.short_id) == (-1, "N1", "N", "-N1", None)
    assert item.keyed_score(1) == 5 and instrument.item(1).keyed_score(1) == 1
    short = instrument.short_form()
    assert short.name == "IPIP-NEO-120" and short.ids == (1, 3)
    split = palign_split(instrument)
    assert split.train == (1, 3) and split.test == (2, 4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("full_id,sign\n1,+N1\n", "missing column(s) text"),
        ("full_id,sign,text\n1,+N1,Worry.\nx,+N1,Worry.\n", "line 3: full_id must be an integer"),
        ("full_id,sign,text\n1,+N1,Worry.\n1,+N1,Worry again.\n", "line 3: duplicate full_id 1"),
        ("full_id,sign,text\n1,N1,Worry.\n", "line 2: sign 'N1'"),
        ("full_id,sign,facet_key,text\n1,+N1,E1,Worry.\n", "line 2: facet_key 'E1' disagrees"),
        ("full_id,sign,text\n1,+N1,\n", "line 2: empty text"),
    ],
)
def test_item_key_errors_name_the_first_bad_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_item_key(write(tmp_path, "bad.csv", text))


def test_split_validation(tmp_path, instrument):
    path = write(tmp_path, "split.json", json.dumps({"train_index": [1, 3], "test_index": [2, 4]}))
    assert load_split(path, instrument) == ItemSplit((1, 3), (2, 4))
    with pytest.raises(DataError, match="in both train and test"):
        ItemSplit((1, 2), (2, 3))
    bad = write(tmp_path, "bad.json", json.dumps({"train_index": [1, 9], "test_index": [2]}))
    with pytest.raises(DataError, match="train item 9 is not in"):
        load_split(bad, instrument)
    with pytest.raises(DataError, match=r"test_index\[0\] must be an integer"):
        load_split(write(tmp_path, "b2.json", json.dumps({"train_index": [1], "test_index": ["2"]})), instrument)


def test_second_person_rewording():
    assert to_second_person("Am always busy.") == "Are always busy."
    assert to_second_person("Believe that I am better than others.") == "Believe that you are better than others."
    assert to_second_person("Use others for my own ends.") == "Use others for your own ends."
    assert to_second_person("Do more than what's expected of me.") == "Do more than what's expected of you."
    assert to_second_person("Feel that I'm unable to cope.") == "Feel that you're unable to cope."
    assert to_second_person("Dislike myself.") == "Dislike yourself."


def test_rewordings_by_position_and_checked(tmp_path, instrument):
    path = write(
        tmp_path,
        "mpi.csv",
        "label_raw,text,label_ocean,key\nAnxiety,Worry about stuff,N,1\nFriendliness,Make friends easily,E,1\n",
    )
    assert load_rewordings(path, instrument) == {1: "Worry about stuff", 3: "Make friends easily"}
    bad = write(tmp_path, "bad.csv", "text,label_ocean,key\nWorry,N,1\nMake friends,E,-1\n")
    with pytest.raises(DataError, match="line 3: key -1 but item 3 is keyed"):
        load_rewordings(bad, instrument)


PAPI = [
    {"case": 7, "sex": 1, "i1": 5, "i2": 4, "i3": 0, "i4": 2},
    {"case": 8, "sex": 2, "i1": 1, "i2": 1, "i3": 3, "i4": 5},
]


def test_papi_recoded_answers_become_raw(tmp_path, instrument):
    path = write(tmp_path, "papi.json", json.dumps(PAPI))
    first, second = load_answers(path, instrument, recoded=True)
    assert first.subject_id == "7" and first.info["sex"] == 1
    # '-' keyed items were stored recoded: raw = 6 - value; '+' items as stored; 0 stays missing.
    assert [first.raw_answer(i) for i in (1, 2, 3, 4)] == [5, 2, None, 4]
    assert first.keyed_score(instrument.item(2)) == 4 and first.keyed_score(instrument.item(3)) is None
    assert [first.stance(i) for i in (1, 2, 3, 4)] == [1, -1, 0, 1]
    assert second.stance(3) == 0  # neutral
    scores = domain_scores(first, instrument)
    assert scores == {"N": 4.5, "E": 2.0}
    assert facet_scores(first, instrument)["E1"] == 2.0
    answers = {a.item.full_id: (a.raw_answer, a.keyed_score) for a in first.answers(instrument)}
    assert answers[4] == (4, 2)
    raw = load_answers(path, instrument, recoded=False)[0]
    assert raw.raw_answer(2) == 4


def test_answers_need_declared_recoding(tmp_path, instrument):
    path = write(tmp_path, "papi.json", json.dumps(PAPI))
    with pytest.raises(ConfigError, match="recoded"):
        load_answers(path, instrument)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"case": 1, "i1": 6, "i2": 1, "i3": 1, "i4": 1}], "record 0: i1 = 6 is out of range"),
        (
            [{"case": 1, "i1": 1, "i2": 1, "i3": 1, "i4": 1}, {"case": 2, "i1": "x", "i2": 1, "i3": 1, "i4": 1}],
            "record 1: i1 must be an integer",
        ),
        ([{"case": 1, "i1": 1, "i2": 1, "i3": 1, "i4": 1, "i9": 1}], "record 0: column 'i9' names item 9"),
        ([{"case": 1, "i1": 1, "i2": 1, "i4": 1}], "record 0: missing column i3"),
        ([[1, 2, 3]], "record 0: expected an object"),
    ],
)
def test_answer_errors_name_the_first_bad_row(tmp_path, instrument, records, message):
    with pytest.raises(DataError, match=message):
        load_answers(write(tmp_path, "a.json", json.dumps(records)), instrument, recoded=True)


def test_csv_answers_and_missing_columns(tmp_path, instrument):
    path = write(tmp_path, "a.csv", "case,i1,i2,i3,i4\n5,5,4,,2\n6,1,1,3,9\n")
    with pytest.raises(DataError, match="line 3: i4 = 9 is out of range"):
        load_answers(path, instrument, recoded=False)
    good = write(tmp_path, "b.csv", "id,i1,i3\nme,4,2\n")
    (subject,) = load_answers(good, instrument, recoded=False, required_items=[1, 3])
    assert subject.subject_id == "me" and subject.raw_answer(1) == 4 and subject.raw_answer(2) is None
    with pytest.raises(DataError, match="line 2: missing column i2"):
        load_answers(good, instrument, recoded=False)
    with pytest.raises(DataError, match="no item columns"):
        load_answers(write(tmp_path, "c.csv", "id,x\n1,2\n"), instrument, recoded=False)


def test_memalign_answers_round_trip(tmp_path, instrument):
    person = SubjectAnswers("me", {1: 5, 2: 1, 3: None, 4: 3})
    path = write(tmp_path, "me.json", json.dumps(answers_document([person], instrument)))
    (loaded,) = load_answers(path, instrument)  # the file declares recoded: false
    assert dict(loaded.raw) == dict(person.raw)
    with pytest.raises(ConfigError, match="declares recoded=False"):
        load_answers(path, instrument, recoded=True)
    assert find_subject([loaded], "me") is loaded and find_subject([loaded], "0") is loaded
    with pytest.raises(DataError, match="not found"):
        find_subject([loaded], "nobody")


def test_shared_papi_files():
    key = shared_data("papi", "ipip_neo_300_itemkey.csv")
    ipip = load_ipip_neo_300(key)
    short = load_ipip_neo_120(key)
    assert len(ipip) == 300 and len(short) == 120 and len(ipip.facets) == 30
    split = load_split(shared_data("papi", "mpi_300_split.json"), ipip)
    assert set(split.train) == set(short.ids) and len(split.test) == 180
    assert set(palign_split(ipip).train) == set(split.train)
    rewordings = load_rewordings(shared_data("papi", "mpi_120.csv"), ipip)
    assert rewordings[99] == "Use others for your own ends" and len(rewordings) == 120
    subjects = load_answers(shared_data("papi", "subjects_200.json"), ipip, recoded=True)
    assert len(subjects) == 200
    # Recoded data: "Cheat to get ahead" (-A2, item 159) is mostly stored as 4-5, i.e. mostly *ticked* 1-2.
    raw = [s.raw_answer(159) for s in subjects if s.raw_answer(159) is not None]
    assert ipip.item(159).keyed == -1 and sum(r <= 2 for r in raw) > 0.7 * len(raw)


def test_answers_file_records_its_recoding_and_hash_and_reads_a_bom(tmp_path, instrument):
    import hashlib

    from memalign.persona.subjects import read_answers_file

    text = "case,i1,i2,i3,i4\n5,5,4,,2\n"
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeff".encode() + text.encode())  # Excel's UTF-8 CSV starts with a BOM
    answers = read_answers_file(path, instrument, recoded=True)
    assert answers.recoded is True and answers.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert answers.subjects[0].subject_id == "5"  # the BOM did not hide the id column
    declared = write(tmp_path, "me.json", json.dumps(answers_document(answers.subjects, instrument)))
    assert read_answers_file(declared, instrument).recoded is False  # declared by the file itself
