"""Questionnaire prompts rendered with the tokenizer's own chat template, and the option tokens to score.

The format is never chosen by the model's name: every prompt goes through :mod:`memalign.chat_format`
(the model's chat template with Qwen3 thinking off, and its documented fallbacks), and answers are
appended as token ids, so the read position is exactly the answer token (PAlign's ``[:-5]`` trim read a
position where "agree" and "disagree" prompts were identical on Llama-3, giving NaN directions;
:func:`contrast_answer_ids` refuses such a pair).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from memalign.chat_format import chat_input_ids, single_turn
from memalign.datafiles import csv_rows, read_data_file
from memalign.errors import ConfigError, DataError
from memalign.persona.choices import check_choice
from memalign.persona.instruments import Instrument, Item

DEFAULT_SYSTEM_PROMPT = "You are a helpful, honest and concise assistant."
# PAlign's question template (main.py), with the option lines generated from ``options``.
PALIGN_QUESTION_TEMPLATE = (
    'Given a statement of you: "You {statement}."\n'
    "Please choose from the following options to identify how accurately this statement describes you.\n"
    "Options:\n{options}\n"
)


READ_POSITIONS = ("answer", "decision")


@dataclass(frozen=True)
class LikertOption:
    letter: str
    label: str
    value: int


LIKERT_OPTIONS: tuple[LikertOption, ...] = (
    LikertOption("A", "Very Accurate", 5),
    LikertOption("B", "Moderately Accurate", 4),
    LikertOption("C", "Neither Accurate Nor Inaccurate", 3),
    LikertOption("D", "Moderately Inaccurate", 2),
    LikertOption("E", "Very Inaccurate", 1),
)


@dataclass(frozen=True)
class PromptConfig:
    """How an item becomes a prompt, what the assistant "says" in capture prompts, and what is scored.

    ``read`` picks where the agree/disagree activations are read:

    ``answer`` (PAS / PAlign, :meth:`palign`)
        the prompt is answered (``answer_format``, default ``({letter}``, which instruct models emit as one
        token right after the assistant header) and the heads are read at that answer token;
    ``decision`` (default)
        the user turn ends with ``decision_instruction`` ("Answer (A).") and the heads are read at the
        last prompt token, the position that *predicts* the answer. That is where the ``generated``
        policy steers and where the answer is scored; the answer token of ``answer`` comes one position
        later, where late heads encode "A was just said" (which, added before the answer, can push the
        other way).

    ``token_variants`` are the spellings whose next-token probabilities are summed into an option's
    score (only those that are a single token count).
    """

    question_template: str = PALIGN_QUESTION_TEMPLATE
    option_line: str = "({letter}). {label}"
    options: tuple[LikertOption, ...] = LIKERT_OPTIONS
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    answer_format: str = "({letter}"
    token_variants: tuple[str, ...] = ("({letter}", "{letter}", " {letter}")
    agree_letter: str = "A"
    disagree_letter: str = "E"
    second_person: bool = True
    read: str = "decision"
    decision_instruction: str = "Answer ({letter})."

    def __post_init__(self) -> None:
        check_choice("read", self.read, READ_POSITIONS)
        if "{statement}" not in self.question_template:
            raise ConfigError("question_template must contain '{statement}'")
        letters = [o.letter for o in self.options]
        if len(set(letters)) != len(letters) or len({o.value for o in self.options}) != len(letters):
            raise ConfigError("options must have distinct letters and values")
        if len(letters) < 2:
            raise ConfigError("at least two options are needed")
        for name in ("agree_letter", "disagree_letter"):
            if getattr(self, name) not in letters:
                raise ConfigError(f"{name} {getattr(self, name)!r} is not one of the option letters {letters}")
        if self.agree_letter == self.disagree_letter:
            raise ConfigError("agree_letter and disagree_letter must differ")
        for name in ("answer_format", "option_line", "decision_instruction"):
            if "{letter}" not in getattr(self, name):
                raise ConfigError(f"{name} must contain '{{letter}}'")
        if not self.token_variants or any("{letter}" not in v for v in self.token_variants):
            raise ConfigError("token_variants must be non-empty and each contain '{letter}'")

    @classmethod
    def palign(cls, **overrides: Any) -> PromptConfig:
        """PAlign's read position: the answer token (with the single-token ``(A`` answer, not its ``[:-5]``)."""
        return cls(**{"read": "answer", **overrides})

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(o.value for o in self.options)

    def question(self, statement: str) -> str:
        lines = "\n".join(self.option_line.format(letter=o.letter, label=o.label) for o in self.options)
        return self.question_template.format(statement=statement, options=lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = [asdict(o) for o in self.options]
        data["token_variants"] = list(self.token_variants)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptConfig:
        data = dict(data)
        data["options"] = tuple(LikertOption(**o) for o in data.get("options", [asdict(o) for o in LIKERT_OPTIONS]))
        data["token_variants"] = tuple(data.get("token_variants", cls.token_variants))
        return cls(**data)


# (first-person pattern, second-person replacement), applied in this order ("I am" before "I").
_FIRST_PERSON = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^Am\b", "Are"),
        (r"\bI am\b", "you are"),
        (r"\bI'm\b", "you're"),
        (r"\bI've\b", "you've"),
        (r"\bI'd\b", "you'd"),
        (r"\bI\b", "you"),
        (r"\bmyself\b", "yourself"),
        (r"\bMyself\b", "Yourself"),
        (r"\bmine\b", "yours"),
        (r"\bmy\b", "your"),
        (r"\bMy\b", "Your"),
        (r"\bme\b", "you"),
    )
)


def to_second_person(text: str) -> str:
    """Reword a first-person IPIP fragment for "You {statement}." ("Am always busy" -> "Are always busy").

    IPIP texts are first-person fragments ("Use others for my own ends"); PAlign pasted them after
    "You", giving "You Use others for my own ends..". MPI ships second-person rewordings for the 120
    short-form items only; this covers the rest with the handful of pronoun rules the items need.
    """
    for pattern, replacement in _FIRST_PERSON:
        text = pattern.sub(replacement, text)
    return text


def statement_text(item: Item, rewording: str | None = None, second_person: bool = True) -> str:
    """The phrase after "You": rewording if given, else the item text (reworded), no final period."""
    text = (
        (rewording if rewording is not None else (to_second_person(item.text) if second_person else item.text))
        .strip()
        .rstrip(".")
        .strip()
    )
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text.startswith("I ") else text


def load_rewordings(path: str | Path, instrument: Instrument) -> dict[int, str]:
    """Second-person item texts from a CSV with a ``text`` column (MPI's ``mpi_120.csv`` / ``mpi_300.csv``).

    Rows map to items by a ``full_id`` or ``short_id`` column when present, else by position: a file
    with as many rows as the instrument follows its order, one with as many rows as its short form
    follows short-form order (MPI's 120 file). Optional ``label_ocean`` (domain) and ``key`` (+1/-1)
    columns are checked against the item key, so a misaligned file fails on its first bad line.
    """
    path = Path(path)
    columns, rows = csv_rows(read_data_file(path, "rewordings file")[0], path)
    if "text" not in columns:
        raise DataError(f"{path}: missing column 'text'")
    short = [it for it in instrument if it.short_id is not None]
    by_column = next((c for c in ("full_id", "short_id") if c in (rows[0][1] if rows else {})), None)
    if by_column is None:
        if len(rows) == len(instrument):
            order: Sequence[Item] = instrument.items
        elif len(rows) == len(short):
            order = sorted(short, key=lambda it: it.short_id or 0)
        else:
            raise DataError(
                f"{path}: {len(rows)} rows match neither {instrument.name} ({len(instrument)} items) "
                f"nor its short form ({len(short)}); add a full_id column"
            )
    out: dict[int, str] = {}
    for pos, (where, row) in enumerate(rows):
        if by_column is None:
            item = order[pos]
        else:
            try:
                key = int(str(row[by_column]).strip())
            except ValueError:
                raise DataError(f"{where}: {by_column} must be an integer, got {row[by_column]!r}") from None
            matches = [it for it in instrument if (it.full_id if by_column == "full_id" else it.short_id) == key]
            if not matches:
                raise DataError(f"{where}: {by_column} {key} is not in {instrument.name}")
            item = matches[0]
        domain = (row.get("label_ocean") or "").strip()
        if domain and domain != item.domain:
            raise DataError(f"{where}: label_ocean {domain!r} but item {item.full_id} is in domain {item.domain}")
        keyed = (row.get("key") or "").strip()
        if keyed and int(keyed) != item.keyed:
            raise DataError(f"{where}: key {keyed} but item {item.full_id} is keyed {item.keyed:+d}")
        text = (row["text"] or "").strip()
        if not text:
            raise DataError(f"{where}: empty text")
        out[item.full_id] = text
    return out


def question_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    item: Item,
    config: PromptConfig,
    rewording: str | None = None,
    system: str | None = None,
    decided: str | None = None,
) -> list[int]:
    """One item's question prompt; ``system`` overrides ``config.system_prompt`` (e.g. a persona profile).

    ``decided`` (an option letter) appends the decision instruction for that letter (``read="decision"``).
    """
    statement = statement_text(item, rewording, config.second_person)
    user = config.question(statement)
    if decided is not None:
        user += config.decision_instruction.format(letter=decided)
    return chat_input_ids(tokenizer, single_turn(user, config.system_prompt if system is None else system))


def answer_ids(tokenizer: PreTrainedTokenizerBase, letter: str, config: PromptConfig) -> list[int]:
    ids = list(tokenizer(config.answer_format.format(letter=letter), add_special_tokens=False)["input_ids"])
    if not ids:
        raise ConfigError(f"answer_format {config.answer_format!r} tokenizes to nothing for {letter!r}")
    return ids


def contrast_answer_ids(tokenizer: PreTrainedTokenizerBase, config: PromptConfig) -> tuple[list[int], list[int]]:
    """(agree, disagree) answer tokens; refuses a pair that is identical at the read (last) position."""
    agree = answer_ids(tokenizer, config.agree_letter, config)
    disagree = answer_ids(tokenizer, config.disagree_letter, config)
    if agree[-1] == disagree[-1]:
        raise ConfigError(
            f"the agree and disagree answers ({config.answer_format!r} with {config.agree_letter}/"
            f"{config.disagree_letter}) end in the same token, so their activations at the read position would "
            "be identical and every direction undefined; change answer_format"
        )
    return agree, disagree


def option_token_ids(tokenizer: PreTrainedTokenizerBase, config: PromptConfig) -> tuple[tuple[int, ...], ...]:
    """Per option, the distinct single-token spellings among ``config.token_variants``."""
    per_option: list[tuple[int, ...]] = []
    owner: dict[int, str] = {}
    for option in config.options:
        ids: list[int] = []
        for variant in config.token_variants:
            toks = tokenizer(variant.format(letter=option.letter), add_special_tokens=False)["input_ids"]
            if len(toks) == 1 and toks[0] not in ids:
                ids.append(int(toks[0]))
        if not ids:
            raise ConfigError(
                f"no spelling of option {option.letter!r} in {list(config.token_variants)} is a single "
                "token for this tokenizer; add a variant that is"
            )
        for tok in ids:
            if tok in owner:
                raise ConfigError(f"token {tok} spells both option {owner[tok]} and {option.letter}")
            owner[tok] = option.letter
        per_option.append(tuple(ids))
    return tuple(per_option)
