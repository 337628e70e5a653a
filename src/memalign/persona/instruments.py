"""Questionnaire instruments (IPIP-NEO-300 / IPIP-NEO-120) read from an item-key file, and item splits.

The item key is a CSV with one row per item and these columns (extra columns are ignored):

``full_id``
    Integer id of the item in the full inventory (1..300 for IPIP-NEO-300). Answer files refer to items
    by this id (``i<full_id>`` keys, as in Johnson's IPIP-NEO data and PAlign's PAPI files).
``short_id`` (optional)
    Position in the short form (1..120 for IPIP-NEO-120), empty for items that are not in it.
``sign``
    Keying then facet key, e.g. ``+N1`` or ``-A2``: ``+`` items are scored as answered, ``-`` items as
    ``6 - answer``.
``facet_key`` (optional)
    Facet code such as ``N1``; taken from ``sign`` when absent (and must agree with it when present).
    The domain is its leading letters (``N``).
``facet`` (optional)
    Facet name, e.g. ``Anxiety``.
``text``
    The item as printed on the questionnaire, a first-person fragment ("Worry about things.").

Every problem is reported as a :class:`~memalign.errors.DataError` naming the file and the first bad line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from memalign.datafiles import csv_rows, parse_json_text, read_data_file
from memalign.errors import DataError

_SIGN = re.compile(r"^([+-])([A-Za-z]+)(\d*)$")
REQUIRED_ITEM_KEY_COLUMNS = ("full_id", "sign", "text")


@dataclass(frozen=True)
class Item:
    """One questionnaire item. ``keyed`` is +1 when agreeing raises the trait, -1 when it lowers it."""

    full_id: int
    text: str
    domain: str
    facet_key: str
    keyed: int
    facet: str = ""
    short_id: int | None = None

    def __post_init__(self) -> None:
        if self.keyed not in (1, -1):
            raise ValueError(f"item {self.full_id}: keyed must be +1 or -1, got {self.keyed!r}")
        if not self.text.strip():
            raise ValueError(f"item {self.full_id}: empty text")

    @property
    def sign(self) -> str:
        return ("+" if self.keyed > 0 else "-") + self.facet_key

    def keyed_score(self, raw_answer: int) -> int:
        """Trait-direction score of a raw 1-5 answer (standard IPIP scoring)."""
        return raw_answer if self.keyed > 0 else 6 - raw_answer


@dataclass(frozen=True)
class Instrument:
    """An ordered set of items; ``name`` travels into artifacts so a steering records what it was fit on."""

    name: str
    items: tuple[Item, ...]
    _by_id: dict[int, Item] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[int, Item] = {}
        for item in self.items:
            if item.full_id in by_id:
                raise ValueError(f"instrument {self.name}: duplicate item id {item.full_id}")
            by_id[item.full_id] = item
        if not by_id:
            raise ValueError(f"instrument {self.name} has no items")
        object.__setattr__(self, "_by_id", by_id)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __contains__(self, full_id: object) -> bool:
        return full_id in self._by_id

    def item(self, full_id: int) -> Item:
        try:
            return self._by_id[full_id]
        except KeyError:
            raise DataError(f"item {full_id} is not in instrument {self.name}") from None

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(item.full_id for item in self.items)

    @property
    def domains(self) -> tuple[str, ...]:
        """Domains in first-appearance order (N, E, O, A, C for the IPIP-NEO)."""
        return tuple(dict.fromkeys(item.domain for item in self.items))

    @property
    def facets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(item.facet_key for item in self.items))

    def subset(self, full_ids: Iterable[int], name: str | None = None) -> Instrument:
        """The given items, in the given order (a split, or a short form)."""
        return Instrument(name or self.name, tuple(self.item(i) for i in full_ids))

    def short_form(self, name: str = "IPIP-NEO-120") -> Instrument:
        """Items that carry a ``short_id``, ordered by it (IPIP-NEO-120 from the IPIP-NEO-300 key)."""
        short = sorted((it for it in self.items if it.short_id is not None), key=lambda it: it.short_id or 0)
        if not short:
            raise DataError(f"instrument {self.name} has no short_id column values: no short form")
        return Instrument(name, tuple(short))


def _int(value: str, what: str, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: {what} must be an integer, got {value!r}") from None


def load_item_key(path: str | Path, name: str = "IPIP-NEO-300") -> Instrument:
    """Read an item-key CSV (columns in the module docstring) into an :class:`Instrument`."""
    path = Path(path)
    columns, rows = csv_rows(read_data_file(path, "item key")[0], path)
    missing = [c for c in REQUIRED_ITEM_KEY_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; an item key needs "
            f"{', '.join(REQUIRED_ITEM_KEY_COLUMNS)} (optional: short_id, facet_key, facet)"
        )
    items = []
    seen: dict[int, str] = {}
    seen_short: dict[int, str] = {}
    for where, row in rows:
        line = where.rsplit(" ", 1)[-1]
        full_id = _int(row["full_id"], "full_id", where)
        if full_id < 1:
            raise DataError(f"{where}: full_id must be >= 1, got {full_id}")
        if full_id in seen:
            raise DataError(f"{where}: duplicate full_id {full_id} (first on line {seen[full_id]})")
        seen[full_id] = line
        sign = (row["sign"] or "").strip()
        match = _SIGN.match(sign)
        if not match:
            raise DataError(f"{where}: sign {sign!r} is not keying + facet key such as '+N1' or '-A2'")
        facet_key = match.group(2) + match.group(3)
        declared = (row.get("facet_key") or "").strip()
        if declared and declared != facet_key:
            raise DataError(f"{where}: facet_key {declared!r} disagrees with sign {sign!r}")
        short_raw = (row.get("short_id") or "").strip()
        short_id = None
        if short_raw:
            # Some exports write short ids as floats ("12.0").
            short_id = _int(short_raw.removesuffix(".0"), "short_id", where)
            if short_id in seen_short:
                raise DataError(f"{where}: duplicate short_id {short_id} (first on line {seen_short[short_id]})")
            seen_short[short_id] = line
        text = (row["text"] or "").strip()
        if not text:
            raise DataError(f"{where}: empty text")
        items.append(
            Item(
                full_id=full_id,
                text=text,
                domain=match.group(2),
                facet_key=facet_key,
                keyed=1 if match.group(1) == "+" else -1,
                facet=(row.get("facet") or "").strip(),
                short_id=short_id,
            )
        )
    if not items:
        raise DataError(f"{path}: no items")
    return Instrument(name, tuple(items))


def load_ipip_neo_300(path: str | Path) -> Instrument:
    """IPIP-NEO-300 from its item key (see the module docstring for the columns)."""
    return load_item_key(path, "IPIP-NEO-300")


def load_ipip_neo_120(path: str | Path) -> Instrument:
    """IPIP-NEO-120: the ``short_id`` items of the IPIP-NEO-300 key, in short-form order."""
    return load_item_key(path, "IPIP-NEO-300").short_form("IPIP-NEO-120")


@dataclass(frozen=True)
class ItemSplit:
    """Items a person's steering is fit on (``train``) and items it is judged on (``test``); disjoint."""

    train: tuple[int, ...]
    test: tuple[int, ...]

    def __post_init__(self) -> None:
        for name, ids in (("train", self.train), ("test", self.test)):
            if len(set(ids)) != len(ids):
                raise DataError(f"split: duplicate item ids in {name}")
        overlap = sorted(set(self.train) & set(self.test))
        if overlap:
            raise DataError(f"split: items {overlap[:5]} are in both train and test")

    def validate(self, instrument: Instrument) -> ItemSplit:
        for name, ids in (("train", self.train), ("test", self.test)):
            unknown = [i for i in ids if i not in instrument]
            if unknown:
                raise DataError(f"split: {name} item {unknown[0]} is not in {instrument.name}")
        return self


def load_split(path: str | Path, instrument: Instrument | None = None) -> ItemSplit:
    """PAlign's ``{"train_index": [...], "test_index": [...]}`` (full ids), checked against ``instrument``."""
    path = Path(path)
    data = parse_json_text(read_data_file(path, "split file")[0], path)
    if not isinstance(data, dict) or not {"train_index", "test_index"} <= set(data):
        raise DataError(f"{path}: expected an object with 'train_index' and 'test_index' lists of item ids")
    ids: dict[str, tuple[int, ...]] = {}
    for key in ("train_index", "test_index"):
        values = data[key]
        if not isinstance(values, list):
            raise DataError(f"{path}: {key} must be a list")
        for pos, value in enumerate(values):
            if not isinstance(value, int) or isinstance(value, bool):
                raise DataError(f"{path}: {key}[{pos}] must be an integer item id, got {value!r}")
        ids[key] = tuple(values)
    split = ItemSplit(train=ids["train_index"], test=ids["test_index"])
    return split.validate(instrument) if instrument is not None else split


def palign_split(instrument: Instrument) -> ItemSplit:
    """PAlign's split without its file: train on the IPIP-NEO-120 items, test on the other 180.

    PAlign's ``mpi_300_split.json`` is exactly this set split (in a different order).
    """
    train = tuple(item.full_id for item in instrument.short_form().items)
    chosen = set(train)
    return ItemSplit(train=train, test=tuple(i for i in instrument.ids if i not in chosen))
