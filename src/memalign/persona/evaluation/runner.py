"""Run several alignment modes over many subjects: resumable, one JSON per mode in PAlign's naming.

Layout of an output directory::

    config.json                         the run's whole configuration (checked before anything is written)
    records/{mode}.jsonl                one line per finished subject (resume skips them)
    {mode}_{model-slug}_OOD.json        PAlign's file name: summary ``score`` block + per-subject records

``config.json`` records everything that changes a score: the model (its slug, where it came from, the
dtype actually used and a sha256 of its weights), the data by content hash (item key, split, subjects —
after recoding — rewordings, personality prompts), and the scoring options (answering, prompt and fit
configs, calibration, unparsed policy). A run into a folder whose configuration differs is refused with
a :class:`~memalign.errors.ConfigError` naming the differing keys, before anything is written, so a
resume only ever continues the same configuration. Several runs may fill one folder with different modes
or subjects of the same file: a key one run did not use (``null``, e.g. the model of a predictors-only run)
is compatible with anything. ``--label`` variants keep their own ``config[label].json``.

A subject is appended to a mode's JSONL only after it is complete, so an interrupted run loses at most
the subject in progress; a torn last line (the crash signature) is dropped and that subject redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

import memalign
from memalign.errors import ConfigError, DataError
from memalign.persona.evaluation.modes import EvalMode, get_mode, timed_predict
from memalign.persona.evaluation.records import subject_record, summarize
from memalign.persona.instruments import Instrument, ItemSplit
from memalign.persona.subjects import SubjectAnswers
from memalign.progress import progress_bar, status
from memalign.scaleout.ordered import in_order
from memalign.text import model_slug

if TYPE_CHECKING:
    from memalign.persona.evaluation import EvalSetup
    from memalign.scaleout.options import RayOptions

logger = logging.getLogger(__name__)

CONFIG_FORMAT = "memalign.persona_eval/2"
# Parts of config.json that describe the run, not what produced its scores: never compared on resume.
INFORMATIONAL = ("format", "modes", "run")
# The mode whose score depends on the personality prompts (the others never read them).
PROMPTS_MODE = "personality_prompt"


def mode_keys(modes: Sequence[str], label: str | None = None) -> list[str]:
    """How the modes of a run are stored: ``{mode}`` or, for a labelled variant, ``{mode}[{label}]``."""
    return [f"{name}[{label}]" if label else name for name in modes]


def result_path(out: Path, mode: str, model: str | None) -> Path:
    """PAlign's ``{mode}_{model}_OOD.json``, with the model as :func:`memalign.text.model_slug` writes it."""
    return Path(out) / f"{mode}_{model_slug(model)}_OOD.json"


def _clean(value: Any) -> Any:
    """JSON without NaN (null instead), so other tools can read the files."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _digest(value: Any) -> str:
    """sha256 of a canonical JSON form: equal content, equal hash, whatever order a file listed it in."""
    return hashlib.sha256(json.dumps(_clean(value), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---- configuration -----------------------------------------------------------------------------
def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over every parameter's name, dtype, shape and bytes: which weights produced the scores.

    Unlike the artifact fingerprint (a few rows, dtype-independent) this sees a fine-tune of any module;
    it depends on the dtype, which the configuration records anyway.
    """
    digest = hashlib.sha256()
    with status("Hashing the model weights"):
        for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            tensor = param.detach()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            if tensor.numel():
                digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def _model_source(name: str) -> str:
    """Where a model name resolves to, without loading or converting anything."""
    from memalign.models.presets import PRESETS

    if name.startswith("tiny:"):
        return name
    if name in PRESETS:
        return f"preset:{name}"
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else f"hub:{name}"


def model_config(
    name: str | None, model: torch.nn.Module | None = None, dtype: torch.dtype | str | None = None
) -> dict[str, Any]:
    """The model part of a run configuration: slug, source, preset checksum, dtype used, weights sha256.

    Without ``model`` (before loading) the weights hash is unknown (``None``) and ``dtype`` is the one
    ``load_model`` will use; that partial record is enough to refuse a folder early.
    """
    from memalign.models.presets import PRESETS

    name = name or (str(getattr(model, "name_or_path", "") or "") or None)
    if dtype is None and model is not None:
        dtype = getattr(model, "dtype", None)
    preset = PRESETS.get(name) if name else None
    return {
        "slug": model_slug(name),
        "source": _model_source(name) if name else None,
        "preset_sha256": preset.sha256 if preset is not None else None,
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "weights_sha256": weights_sha256(model) if model is not None else None,
    }


def _instrument_digest(instrument: Instrument) -> str:
    return _digest(
        [
            instrument.name,
            [[it.full_id, it.text, it.domain, it.facet_key, it.keyed, it.facet, it.short_id] for it in instrument],
        ]
    )


def _split_digest(split: ItemSplit) -> str:
    # PAlign's split file and palign_split() hold the same sets in another order: the same scores
    return _digest({"train": sorted(split.train), "test": sorted(split.test)})


def _subjects_digest(population: Sequence[SubjectAnswers]) -> str:
    return _digest([[p.subject_id, sorted(p.raw.items())] for p in population])


def run_config(
    setup: EvalSetup,
    modes: Mapping[str, EvalMode],
    model: str | None,
    extra: Mapping[str, Any] | None = None,
    model_record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that changes a score of this run (what ``config.json`` holds), plus ``extra``.

    ``extra`` carries what only the caller knows: the CLI adds ``files`` (path and sha256 of each data
    file, the subjects file's recoding) and ``run`` (offset, limit, threads, device: informational).
    Parts no mode of this run uses are ``None`` (compatible with any value on resume). ``model_record``
    is :func:`model_config` of a model loaded elsewhere (a Ray worker's), when ``setup`` holds none.
    """
    llm = any(obj.needs_model for obj in modes.values())
    prompts_used = any(type(obj).name == PROMPTS_MODE for obj in modes.values())
    prompts = setup.personality_prompts
    data = {
        "item_key": _instrument_digest(setup.instrument),
        "split": _split_digest(setup.split),
        "n_train_items": len(setup.split.train),
        "n_test_items": len(setup.split.test),
        "subjects": _subjects_digest(setup.population),
        "n_subjects_in_file": len(setup.population),
        "rewordings": _digest(sorted(setup.rewordings.items())) if llm else None,
        "personality_prompts": (
            None
            if not prompts_used
            else "generated by the model"
            if prompts is None
            else _digest(sorted(prompts.items()))
        ),
    }
    scoring = None
    if llm:
        scoring = {
            "answering": setup.answering,
            "max_new_tokens": setup.max_new_tokens if setup.answering == "generate" else None,
            "prompt_config": setup.prompt_config.to_dict(),
            "fit_config": setup.fit_config.to_dict(),
            "calibration_l2": setup.calibration_l2,
        }
    extra = dict(extra or {})
    run = {"library_version": memalign.__version__, **extra.pop("run", {})}
    return {
        "format": CONFIG_FORMAT,
        "modes": list(modes),
        **extra,
        "model": (
            dict(model_record)
            if llm and model_record is not None
            else model_config(model, setup.model)
            if llm and setup.model is not None
            else None
        ),
        "data": data,
        "scoring": scoring,
        "run": run,
    }


def config_path(out: Path, label: str | None = None) -> Path:
    return Path(out) / (f"config[{label}].json" if label else "config.json")


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf of ``new`` that ``old`` records with another value.

    ``None`` on either side is "not used by that run" and matches anything; a key ``old`` does not record
    at all is a difference (that run's scores cannot be shown to match).
    """
    if new is None or old is None:
        return []
    if isinstance(new, dict) and isinstance(old, dict):
        out = []
        for key, value in new.items():
            name = f"{prefix}{key}"
            if not prefix and key in INFORMATIONAL:
                continue
            if key == "path" and prefix.startswith("files."):
                continue  # where a data file lies is provenance; its sha256 is compared
            if key not in old:
                if value is not None:
                    out.append((name, "(not recorded)", value))
                continue
            out += _differences(old[key], value, f"{name}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _merge(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merge(old.get(k), v) for k, v in new.items()}}
    return old if new is None else new


def _short(value: Any) -> str:
    """A value for a one-line message: hashes shortened to their first 10 digits."""
    if isinstance(value, str) and len(value) > 24:
        return json.dumps(value[:10] + "...")
    return json.dumps(value)


def check_folder(out: str | Path, config: Mapping[str, Any], label: str | None = None) -> dict[str, Any]:
    """The configuration to store after a run with ``config`` into ``out``; raises if ``out`` holds another.

    Writes nothing. A folder with records but no configuration (or one written before configurations
    recorded the data and the weights) cannot be shown to match and is refused too.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    new = json.loads(json.dumps(_clean(dict(config))))  # compare in the form it is stored
    path = config_path(out, label)
    if not path.is_file():
        stray = sorted(p.name for p in (out / "records").glob("*.jsonl")) if (out / "records").is_dir() else []
        mine = [n for n in stray if n.removesuffix(".jsonl") in new.get("modes", [])]
        if mine:
            raise ConfigError(
                f"{out} holds records ({', '.join(mine)}) but no {path.name}, so their configuration "
                "is unknown; use another --out, or delete the directory to start over"
            )
        return new
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path} is not valid JSON ({exc}); use another --out, or delete the directory to start over"
        ) from None
    if not isinstance(old, dict) or old.get("format") != CONFIG_FORMAT:
        raise ConfigError(
            f"{path} was written by an older memalign that did not record the data files and model "
            "weights, so a resume cannot be shown to match; use another --out, or delete the "
            "directory to start over"
        )
    changed = _differences(old, new)
    if changed:
        keys = ", ".join(
            f"{k} ({_short(a)} -> {_short(b)})" if not isinstance(a, dict | list) else k for k, a, b in changed
        )
        raise ConfigError(
            f"{out} holds results of a different run ({keys} differ); use another --out, or "
            "delete the directory to start over"
        )
    merged = _merge(old, new)
    merged["modes"] = list(dict.fromkeys([*old.get("modes", []), *new.get("modes", [])]))
    return merged


def _write_json(path: Path, document: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(document), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---- records -----------------------------------------------------------------------------------
def _parse_records(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """(records, whether the file must be rewritten: a torn last line dropped or no final newline)."""
    if not path.is_file():
        return [], False
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 (byte {exc.start}); delete it to redo that mode") from None
    lines = text.split("\n")
    last = max((n for n, line in enumerate(lines) if line.strip()), default=-1)
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    rewrite = bool(text) and not text.endswith("\n")
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == last:  # a line cut by an interruption: that subject is simply redone
                logger.warning(
                    "%s: dropping the incomplete last line (an interrupted run); that subject is redone", path
                )
                rewrite = True
                break
            raise DataError(
                f"{path}:{n + 1} is not valid JSON and is not the last line, so the file was damaged "
                "after writing; delete the file to redo that mode"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("subject"), str):
            raise DataError(f"{path}:{n + 1} is not a subject record; delete the file to redo that mode")
        if record["subject"] in seen:
            raise DataError(
                f"{path}:{n + 1} repeats subject {record['subject']!r} (first on line "
                f"{seen[record['subject']]}); two runs wrote into one folder at once? delete the file "
                "to redo that mode"
            )
        seen[record["subject"]] = n + 1
        records.append(record)
    return records, rewrite


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete records of a mode's JSONL (a torn last line is left out; see the module docstring)."""
    return _parse_records(Path(path))[0]


def _write_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(_clean(r)) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


def write_summary(
    out: Path,
    mode: str,
    model: str | None,
    records: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    description: str = "",
) -> Path:
    path = result_path(out, mode, model)
    document = {
        "mode": mode,
        "description": description,
        "model": model,
        **meta,
        **summarize(records),
        "records": list(records),
    }
    _write_json(path, document)
    return path


# ---- the run -------------------------------------------------------------------------------------
def check_label(label: str | None) -> None:
    """A variant label becomes part of file names: letters, digits and ``. _ + -`` only."""
    if label is not None and not re.fullmatch(r"[A-Za-z0-9._+-]+", label):
        raise ConfigError(f"label {label!r} may only hold letters, digits and . _ + -")


def _check_inputs(setup: EvalSetup, subjects: Sequence[SubjectAnswers], label: str | None, unparsed: str) -> None:
    check_label(label)
    if unparsed not in ("midpoint", "exclude"):
        raise ConfigError(f"unparsed must be 'midpoint' or 'exclude', got {unparsed!r}")
    if not subjects:
        raise ConfigError("no subjects to evaluate")
    if not setup.split.test:
        raise ConfigError(
            "the item split has no test items: there is nothing to evaluate (check the split file's "
            "test_index, or that the item key has items outside the short form)"
        )
    seen: set[str] = set()
    for person in subjects:
        if person.subject_id in seen:
            raise ConfigError(f"subject {person.subject_id!r} is given twice; subject ids must be unique")
        seen.add(person.subject_id)


def evaluate_subject(
    setup: EvalSetup,
    modes: Mapping[str, EvalMode],
    person: SubjectAnswers,
    pending: Sequence[str],
    unparsed: str = "midpoint",
    keep_predictions: bool = True,
) -> dict[str, dict[str, Any]]:
    """The records of ``person`` for the modes named in ``pending`` (keys of ``modes``), as a mode's JSONL
    stores them. A local run and a Ray worker both call this, so their records are the same."""
    index = {p.subject_id: n for n, p in enumerate(setup.population)}.get(person.subject_id)
    out: dict[str, dict[str, Any]] = {}
    for name in pending:
        prediction, seconds, cpu = timed_predict(modes[name], setup, person)
        record = subject_record(
            person, setup.split.test, setup.instrument, prediction.expected, prediction.argmax, unparsed
        )
        record.update(
            {
                "index": index,
                "mode": name,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "option_mass": prediction.option_mass,
                "info": prediction.info,
            }
        )
        if keep_predictions:
            record["predictions"] = {str(i): [prediction.expected[i], prediction.argmax[i]] for i in setup.split.test}
        out[name] = record
    return out


# What answers the subjects of a run: ``(person, pending mode keys)`` tasks in, ``(task index, records)``
# out in any order (each index once). A local run answers them in this process, a Ray run on workers.
SubjectTask = tuple[SubjectAnswers, list[str]]


class SubjectSource(Protocol):
    def model_record(self) -> Mapping[str, Any] | None:
        """:func:`model_config` of the model the records come from, when ``setup`` does not hold it."""
        ...

    def prepare(self) -> None:
        """Build per-run state (fit the predictors): the last step that may refuse the run."""
        ...

    def results(self, tasks: Sequence[SubjectTask]) -> Iterator[tuple[int, dict[str, dict[str, Any]]]]: ...

    def status(self) -> str:
        """A line for the progress bar (empty: nothing to add)."""
        ...


@dataclass
class LocalSubjects:
    """Subjects answered one after another in this process, with ``setup``'s model."""

    setup: EvalSetup
    modes: Mapping[str, EvalMode]
    unparsed: str = "midpoint"
    keep_predictions: bool = True

    def model_record(self) -> Mapping[str, Any] | None:
        return None

    def prepare(self) -> None:
        for obj in self.modes.values():
            obj.prepare(self.setup)

    def results(self, tasks: Sequence[SubjectTask]) -> Iterator[tuple[int, dict[str, dict[str, Any]]]]:
        for n, (person, pending) in enumerate(tasks):
            yield n, evaluate_subject(self.setup, self.modes, person, pending, self.unparsed, self.keep_predictions)

    def status(self) -> str:
        return ""


def run_eval(
    setup: EvalSetup,
    modes: Sequence[str],
    subjects: Sequence[SubjectAnswers],
    out: Path,
    model: str | None,
    config: dict[str, Any] | None = None,
    unparsed: str = "midpoint",
    keep_predictions: bool = True,
    label: str | None = None,
    ray: RayOptions | None = None,
    dtype: str = "auto",
    device: str = "cpu",
) -> dict[str, Path]:
    """Evaluate ``modes`` on ``subjects`` (held-out items of ``setup.split``), resuming what ``out`` holds.

    ``config`` adds caller-side parts to the recorded configuration (see :func:`run_config`). ``label``
    names a variant (e.g. other PAS settings): results are stored as ``{mode}[{label}]``, so variants of
    one mode sit side by side in a report. A subject without answers on the test items is scored as
    nothing (excluded from the means, counted), never as a perfect 0.

    With ``ray`` the subjects are answered by workers of a Ray cluster (:mod:`memalign.scaleout`), each
    loading ``model`` once in ``dtype`` on ``device`` (``setup`` then holds no model); the records, written
    here in subject order, are the same as a local run's.
    """
    _check_inputs(setup, subjects, label, unparsed)
    mode_objs = {key: get_mode(name) for key, name in zip(mode_keys(modes, label), modes, strict=True)}
    if ray is None:
        source = LocalSubjects(setup, mode_objs, unparsed, keep_predictions)
        return _run(setup, mode_objs, subjects, Path(out), model, config, unparsed, label, source)
    from memalign.scaleout.persona import ray_subjects

    with ray_subjects(ray, setup, mode_objs, model, dtype, device, unparsed, keep_predictions) as source:
        return _run(setup, mode_objs, subjects, Path(out), model, config, unparsed, label, source)


def _run(
    setup: EvalSetup,
    mode_objs: Mapping[str, EvalMode],
    subjects: Sequence[SubjectAnswers],
    out: Path,
    model: str | None,
    config: dict[str, Any] | None,
    unparsed: str,
    label: str | None,
    source: SubjectSource,
) -> dict[str, Path]:
    """Decide what is to do, get the records from ``source``, write them in subject order, summarise."""
    stored = check_folder(out, run_config(setup, mode_objs, model, config, source.model_record()), label)
    record_files = {m: out / "records" / f"{m}.jsonl" for m in mode_objs}
    parsed = {m: _parse_records(path) for m, path in record_files.items()}
    source.prepare()
    # everything that can refuse the run has run: from here on the folder is written
    (out / "records").mkdir(parents=True, exist_ok=True)
    _write_json(config_path(out, label), stored)
    records = {m: recs for m, (recs, _) in parsed.items()}
    for m, (recs, rewrite) in parsed.items():
        if rewrite:
            _write_records(record_files[m], recs)
    wanted = {p.subject_id for p in subjects}
    done = {m: {r["subject"] for r in recs} for m, recs in records.items()}
    todo = [p for p in subjects if any(p.subject_id not in done[m] for m in mode_objs)]
    tasks = [(p, [m for m in mode_objs if p.subject_id not in done[m]]) for p in todo]
    meta = {
        "n_train_items": len(setup.split.train),
        "n_test_items": len(setup.split.test),
        "answering": setup.answering,
        "unparsed_policy": unparsed,
    }
    if len(todo) < len(subjects):
        logger.info("resuming: %d of %d subjects already done for every mode", len(subjects) - len(todo), len(subjects))
    for person in todo:
        if all(person.raw_answer(i) is None for i in setup.split.test):
            logger.warning(
                "subject %s has no answers on the %d test items: it is not scored (left out of the "
                "means and counted as unscored)",
                person.subject_id,
                len(setup.split.test),
            )
    last_write = time.monotonic()
    with progress_bar(
        f"Evaluating {len(mode_objs)} modes", total=len(todo), unit="subjects", extra=source.status
    ) as advance:
        for finished in in_order(source.results(tasks)):
            for name, record in finished.items():
                with record_files[name].open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(_clean(record)) + "\n")
                records[name].append(record)
                done[name].add(record["subject"])
            if time.monotonic() - last_write > 30:  # summaries for a look during long runs; JSONL is the truth
                for name in mode_objs:
                    write_summary(
                        out,
                        name,
                        model,
                        [r for r in records[name] if r["subject"] in wanted],
                        meta,
                        mode_objs[name].description,
                    )
                last_write = time.monotonic()
            advance(1)
    paths = {}
    for name, mode in mode_objs.items():
        chosen = [r for r in records[name] if r["subject"] in wanted]
        paths[name] = write_summary(out, name, model, chosen, meta, mode.description)
        unscored = [r["subject"] for r in chosen if not r.get("n_scored")]
        if unscored:
            logger.warning(
                "%s: %d of %d subjects have no scored answer on the test items and are left out of the means (%s)",
                name,
                len(unscored),
                len(chosen),
                ", ".join(unscored[:5]),
            )
    return paths
