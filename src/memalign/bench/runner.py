"""Runs tasks x lengths x methods on one model and writes one result directory per combination.

A directory is named after its resolved configuration (kvpress style), e.g.
``passkey__8192__smollm2-135m-instruct__em-llm__i128-l4096-m2048-c512-lt__seed0`` and holds:

* ``config.yaml``: the resolved run configuration (task, length, model, method config, budget, ...);
* ``predictions.jsonl``: one line per item, appended as soon as it is answered (id, prediction, gold,
  metric, score, prompt length, time; for memory methods ``answer_attended`` and, when a wrong answer
  is a value copied from the context, ``wrong_value`` / ``wrong_value_attended``, see
  :mod:`memalign.bench.needle`). Items already there are skipped, so an interrupted sweep resumes
  where it stopped and a sweep re-run with more samples only computes the new ones;
* ``metrics.json``: written from the predictions when the directory is complete (mean score x 100,
  by depth, failures counted, timing).

The sample count is deliberately not in the name: sample ``i`` of a task is identical whatever the
count, so more samples extend the same directory.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memalign.bench.methods import Budget, EngineUnavailableError, Method, em_api, is_memory_method, make_method
from memalign.bench.metrics import score_prediction
from memalign.bench.needle import answer_attended, text_token_spans, wrong_value
from memalign.bench.prompts import EncodedPrompt, encode, truncate_middle
from memalign.bench.records import Record, iter_jsonl
from memalign.bench.tasks.base import TaskContext, get_task
from memalign.errors import ConfigError
from memalign.progress import progress_bar

logger = logging.getLogger(__name__)

CONFIG_FILE, PREDICTIONS_FILE, METRICS_FILE = "config.yaml", "predictions.jsonl", "metrics.json"


def model_slug(model: str) -> str:
    """A short, path-safe model name: presets keep their name, paths their last component."""
    name = model.rstrip("/").split("/")[-1] if ("/" in model and not model.startswith("tiny:")) else model
    return name.replace(":", "-").removesuffix(".gguf")


@dataclass(frozen=True)
class RunConfig:
    """One task x length x method on one model: what a result directory is named after and records."""

    task: str
    length: int
    method: str
    model: str
    samples: int = 5
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    dtype: str = "auto"
    prefill_chunk: int = 2048

    def __post_init__(self) -> None:
        task = get_task(self.task)
        if self.samples <= 0:
            raise ConfigError(f"samples must be > 0, got {self.samples}")
        if task.synthetic and self.length <= 0:
            raise ConfigError(f"synthetic task {self.task!r} needs a target length > 0")
        if self.length < 0:
            raise ConfigError(f"length must be >= 0 (0 = no truncation for real suites), got {self.length}")
        make_method(self.method, self.budget)  # validates the name

    def name(self) -> str:
        parts = [self.task.replace(":", "-"), str(self.length), model_slug(self.model), self.method]
        if is_memory_method(self.method):
            parts.append(self.budget.tag())
        if self.dtype not in ("auto", "bf16", "bfloat16"):
            parts.append(self.dtype)
        parts.append(f"seed{self.seed}")
        return "__".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "budget": asdict(self.budget), "name": self.name()}


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, record: Record) -> set[int]:
    """EOS ids of the generation config and tokenizer, plus the last token of each record stop string."""
    ids: set[int] = set()
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    for value in (eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    for text in record.stop:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if encoded:
            ids.add(encoded[-1])
    return ids


def done_ids(directory: Path) -> set[str]:
    path = directory / PREDICTIONS_FILE
    return {str(row["id"]) for row in iter_jsonl(path)} if path.is_file() else set()


def predict_one(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, method: Method, record: Record,
                truncate: int = 0) -> dict[str, Any]:
    """Answer one record; the returned row is what predictions.jsonl stores (scored)."""
    prompt = encode(tokenizer, record)
    prompt = truncate_middle(prompt, truncate - record.max_new_tokens if truncate else 0)
    input_ids = torch.tensor([prompt.input_ids], device=model.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    row: dict[str, Any] = {"id": record.id, "task": record.task, "metric": record.metric, "answer": record.answer,
                           "meta": record.meta, "prompt_tokens": len(prompt), "method": method.name}
    try:
        new_ids = method.generate(model, input_ids, record.max_new_tokens, stop_token_ids(model, tokenizer, record))
        row["prediction"] = tokenizer.decode(new_ids, skip_special_tokens=True)
        row["new_tokens"] = len(new_ids)
        row["score"] = score_prediction(record.metric, row["prediction"], record.answer, record.meta)
        attended = getattr(method, "last_attended", None)
        if attended is not None:
            row.update(_attention_evidence(tokenizer, record, prompt, row, attended))
    except EngineUnavailableError:
        raise
    except (torch.OutOfMemoryError, RuntimeError) as exc:  # counted as a failure, never dropped
        row.update(prediction="", new_tokens=0, score=0.0, error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = round(time.perf_counter() - start, 3)
    # process CPU time: on a machine shared with other jobs, wall seconds say more about the load than
    # about the method; with one torch thread CPU seconds are the method's own cost
    row["cpu_seconds"] = round(time.process_time() - cpu_start, 3)
    return row


def _attention_evidence(tokenizer: PreTrainedTokenizerBase, record: Record, prompt: EncodedPrompt,
                        row: dict[str, Any], attended: list[list[tuple[int, int]]]) -> dict[str, Any]:
    """``answer_attended`` (every gold answer found verbatim) and, for a wrong answer copied from the
    context, ``wrong_value`` / ``wrong_value_attended``: was that value in view? One tokenisation of the
    prompt locates both."""
    golds = [str(answer) for answer in record.answer]
    copied = wrong_value(row["prediction"], record) if row["score"] < 1 else None
    spans = text_token_spans(tokenizer, record, prompt, golds + ([copied] if copied else []))
    if spans is None:
        return {}
    evidence: dict[str, Any] = {}
    if golds and all(spans[:len(golds)]):
        evidence["answer_attended"] = answer_attended(spans[:len(golds)], attended)
    if copied and spans[-1]:
        evidence["wrong_value"], evidence["wrong_value_attended"] = copied, answer_attended([spans[-1]], attended)
    return evidence


def rescore(row: dict[str, Any]) -> float:
    """The score of one stored prediction under the current metrics (a failed item scores 0)."""
    if row.get("error"):
        return 0.0
    return score_prediction(row["metric"], row["prediction"], row["answer"], row.get("meta"))


def summarize(directory: Path) -> dict[str, Any]:
    """Rescore every prediction (so a metric fix applies to old runs) and aggregate."""
    rows = list(iter_jsonl(directory / PREDICTIONS_FILE))
    scores, by_depth = [], defaultdict(list)
    for row in rows:
        score = rescore(row)
        scores.append(score)
        depth = (row.get("meta") or {}).get("depth")
        if depth is not None:
            by_depth[f"{float(depth):.3f}"].append(score)
    seconds = sum(float(r.get("seconds", 0.0)) for r in rows)
    cpu_timed = [float(r["cpu_seconds"]) for r in rows if "cpu_seconds" in r]  # absent in older folders
    attended = [float(r["answer_attended"]) for r in rows if r.get("answer_attended") is not None]
    copied = [float(r["wrong_value_attended"]) for r in rows if r.get("wrong_value_attended") is not None]
    return {
        "score": round(100 * sum(scores) / len(scores), 2) if scores else None,
        "n": len(rows),
        "n_failed": sum(1 for r in rows if r.get("error")),
        "by_depth": {d: round(100 * sum(v) / len(v), 2) for d, v in sorted(by_depth.items())},
        "mean_prompt_tokens": round(sum(r["prompt_tokens"] for r in rows) / len(rows), 1) if rows else None,
        # memory methods: mean fraction of layers whose last prompt token attended the gold answer
        "answer_attended": round(100 * sum(attended) / len(attended), 2) if attended else None,
        # wrong answers copied from the context (distractors): how many, and how often that value was in view
        "n_wrong_value": len(copied),
        "wrong_value_attended": round(100 * sum(copied) / len(copied), 2) if copied else None,
        "seconds": round(seconds, 1),
        "prompt_tokens_per_second": round(sum(r["prompt_tokens"] for r in rows) / seconds, 1) if seconds else None,
        "mean_cpu_seconds": round(sum(cpu_timed) / len(cpu_timed), 3) if cpu_timed else None,
    }


def finalize(directory: Path, config: dict[str, Any]) -> dict[str, Any]:
    metrics = {**summarize(directory), "config": config}
    tmp = directory / (METRICS_FILE + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=1))
    tmp.replace(directory / METRICS_FILE)
    return metrics


def write_config(directory: Path, config: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


def run_records(cfg: RunConfig, records: list[Record], model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                out: Path, method: Method | None = None) -> dict[str, Any]:
    """Answer the records not yet in ``out/<cfg.name()>`` and (re)write its metrics."""
    method = method or make_method(cfg.method, cfg.budget, cfg.prefill_chunk)
    directory = out / cfg.name()
    config = {**cfg.to_dict(), "method_config": method.config(), "n_records": len(records)}
    have = done_ids(directory)
    todo = [r for r in records if r.id not in have]
    if not todo and (directory / METRICS_FILE).is_file():
        logger.info("%s: done (%d items), skipped", cfg.name(), len(have))
        return json.loads((directory / METRICS_FILE).read_text())
    write_config(directory, config)
    truncate = cfg.length if not get_task(cfg.task).synthetic else 0
    with progress_bar(f"{cfg.task} {cfg.length} {cfg.method}", total=len(todo)) as advance, \
            (directory / PREDICTIONS_FILE).open("a", encoding="utf-8") as fh:
        for k, record in enumerate(todo, 1):
            row = predict_one(model, tokenizer, method, record, truncate)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            advance(1)
            logger.debug("%s %d/%d score=%.2f %d tok %.1fs %s", cfg.name(), k, len(todo), row["score"],
                         row["prompt_tokens"], row["seconds"], row.get("error", ""))
    return finalize(directory, config)


def run_sweep(tasks: Iterable[str], lengths: Iterable[int], methods: Iterable[str], model_name: str, out: Path, *,
              samples: int = 5, seed: int = 0, budget: Budget | None = None, dtype: str = "auto",
              prefill_chunk: int = 2048, haystack: Path | None = None, data_dir: Path | None = None,
              depths: tuple[float, ...] | None = None) -> list[dict[str, Any]]:
    """Load the model once; per task and length generate the records once and run every method on them."""
    from memalign.models import load_model

    budget = budget or Budget()
    tasks, lengths, methods = list(tasks), list(lengths), list(methods)
    configs = [RunConfig(t, n, m, model_name, samples, seed, budget, dtype, prefill_chunk)
               for t in tasks for n in lengths for m in methods]  # validate everything before loading
    if any(is_memory_method(m) for m in methods):
        em_api()  # fail before hours of work, not after the first full-attention run
    model, tokenizer = load_model(model_name, dtype=dtype)
    ctx = TaskContext(tokenizer, haystack_dir=haystack, data_dir=data_dir, depths=depths)
    results = []
    records_cache: dict[tuple[str, int], list[Record]] = {}
    for cfg in configs:
        key = (cfg.task, cfg.length)
        if key not in records_cache:
            records_cache.clear()
            records_cache[key] = get_task(cfg.task).records(ctx, cfg.length, samples, seed)
        results.append(run_records(cfg, records_cache[key], model, tokenizer, out))
    return results
