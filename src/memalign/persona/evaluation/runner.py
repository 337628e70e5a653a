"""Run several alignment modes over many subjects: resumable, one JSON per mode in PAlign's naming.

Layout of an output directory::

    config.json                         the resolved run configuration (checked on resume)
    records/{mode}.jsonl                one line per finished subject (resume skips them)
    {mode}_{model-name}_OOD.json        PAlign's file name: summary ``score`` block + per-subject records

A subject is appended to a mode's JSONL only after it is complete, so an interrupted run loses at most
the subject in progress.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memalign.errors import ConfigError
from memalign.persona.evaluation.modes import EvalSetup, get_mode, timed_predict
from memalign.persona.evaluation.records import subject_record, summarize
from memalign.persona.subjects import SubjectAnswers
from memalign.progress import progress_bar

logger = logging.getLogger(__name__)

# Fields of config.json that must match for a resume to mix results safely.
RESUME_KEYS = ("model", "prompt_config", "fit_config", "answering", "split", "unparsed", "calibration_l2",
               "personality_prompts")


def model_label(model: str | None) -> str:
    """PAlign's ``basename(model)``: the preset/hub name or the path's last component."""
    if not model:
        return "no-model"
    name = Path(str(model).rstrip("/")).name or str(model)
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


def result_path(out: Path, mode: str, model: str | None) -> Path:
    return out / f"{mode}_{model_label(model)}_OOD.json"


def _clean(value: Any) -> Any:
    """JSON without NaN (null instead), so other tools can read the files."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):
                break  # a line cut by an interruption: that subject is simply redone
            raise ConfigError(f"{path}:{n} is not valid JSON; delete the file to redo that mode") from None
    return records


def _check_config(out: Path, config: dict[str, Any], label: str | None = None) -> None:
    path = out / (f"config[{label}].json" if label else "config.json")
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        # a key one of the runs did not use (None) is compatible with anything
        changed = [k for k in RESUME_KEYS if old.get(k) is not None and config.get(k) is not None
                   and _clean(old.get(k)) != _clean(config.get(k))]
        if changed:
            raise ConfigError(f"{out} holds results of a different run ({', '.join(changed)} differ); use another "
                              "--out, or delete the directory to start over")
        modes = list(dict.fromkeys([*old.get("modes", []), *config["modes"]]))
        config = {**old, **{k: v for k, v in config.items() if v is not None}, "modes": modes}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(config), indent=1) + "\n", encoding="utf-8")


def write_summary(out: Path, mode: str, model: str | None, records: Sequence[dict[str, Any]],
                  meta: dict[str, Any], description: str = "") -> Path:
    path = result_path(out, mode, model)
    document = {"mode": mode, "description": description, "model": model, **meta,
                **summarize(records), "records": list(records)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_clean(document), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def run_eval(setup: EvalSetup, modes: Sequence[str], subjects: Sequence[SubjectAnswers], out: Path,
             model: str | None, config: dict[str, Any] | None = None, unparsed: str = "midpoint",
             keep_predictions: bool = True, label: str | None = None) -> dict[str, Path]:
    """Evaluate ``modes`` on ``subjects`` (held-out items of ``setup.split``), resuming what ``out`` holds.

    ``label`` names a variant (e.g. other PAS settings): results are stored as ``{mode}[{label}]``, so
    variants of one mode sit side by side in a report.
    """
    if label is not None and not re.fullmatch(r"[A-Za-z0-9._+-]+", label):
        raise ConfigError(f"label {label!r} may only hold letters, digits and . _ + -")
    if unparsed not in ("midpoint", "exclude"):
        raise ConfigError(f"unparsed must be 'midpoint' or 'exclude', got {unparsed!r}")
    if not subjects:
        raise ConfigError("no subjects to evaluate")
    mode_objs = {(f"{name}[{label}]" if label else name): get_mode(name) for name in modes}
    config = {**(config or {}), "model": model, "modes": list(mode_objs), "unparsed": unparsed,
              "answering": setup.answering, "prompt_config": setup.prompt_config.to_dict(),
              "fit_config": setup.fit_config.to_dict(), "calibration_l2": setup.calibration_l2,
              "split": {"train": list(setup.split.train), "test": list(setup.split.test)}}
    _check_config(Path(out), config, label)
    out = Path(out)
    (out / "records").mkdir(parents=True, exist_ok=True)
    records = {m: read_records(out / "records" / f"{m}.jsonl") for m in mode_objs}
    wanted = {p.subject_id for p in subjects}
    done = {m: {r["subject"] for r in recs} for m, recs in records.items()}
    todo = [p for p in subjects if any(p.subject_id not in done[m] for m in mode_objs)]
    for obj in mode_objs.values():
        obj.prepare(setup)
    meta = {"n_train_items": len(setup.split.train), "n_test_items": len(setup.split.test),
            "answering": setup.answering, "unparsed_policy": unparsed}
    index = {p.subject_id: n for n, p in enumerate(setup.population)}
    if len(todo) < len(subjects):
        logger.info("resuming: %d of %d subjects already done for every mode", len(subjects) - len(todo),
                    len(subjects))
    last_write = time.monotonic()
    with progress_bar(f"Evaluating {len(mode_objs)} modes", total=len(todo), unit="subjects") as advance:
        for person in todo:
            for name, mode in mode_objs.items():
                if person.subject_id in done[name]:
                    continue
                prediction, seconds, cpu = timed_predict(mode, setup, person)
                record = subject_record(person, setup.split.test, setup.instrument, prediction.expected,
                                        prediction.argmax, unparsed)
                record.update({"index": index.get(person.subject_id), "mode": name, "seconds": seconds,
                               "cpu_seconds": cpu, "option_mass": prediction.option_mass, "info": prediction.info})
                if keep_predictions:
                    record["predictions"] = {str(i): [prediction.expected[i], prediction.argmax[i]]
                                             for i in setup.split.test}
                with (out / "records" / f"{name}.jsonl").open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(_clean(record)) + "\n")
                records[name].append(record)
                done[name].add(person.subject_id)
            if time.monotonic() - last_write > 30:  # summaries for a look during long runs; JSONL is the truth
                for name in mode_objs:
                    write_summary(out, name, model, [r for r in records[name] if r["subject"] in wanted], meta,
                                  mode_objs[name].description)
                last_write = time.monotonic()
            advance(1)
    return {name: write_summary(out, name, model, [r for r in records[name] if r["subject"] in wanted], meta,
                                mode_objs[name].description) for name in mode_objs}
