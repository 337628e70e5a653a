"""Runs tasks x lengths x methods on one model and writes one result directory per combination.

A directory is named after everything that changes a score (kvpress style), e.g.
``passkey__8192__smollm2-135m-instruct__em-llm__i128-l4096-m2048-c512-lt__bf16__seed0``: task, length,
model (a local path gets a hash of its resolved path, see :func:`memalign.text.model_slug`), method, its
budget, the dtype actually used (``auto`` resolved), a hash of the data files the items came from
(``data-<hash>``, for real suites and essay haystacks) and the seed. It holds:

* ``config.yaml``: the resolved run configuration (task, length, model identity with a fingerprint of its
  weights, dtype used, data files by content hash, method config, budget, ...). A resume compares it with
  the configuration asking to continue and refuses any difference, naming the keys;
* ``predictions.jsonl``: one line per item, appended as soon as it is answered (id, prediction, gold,
  metric, score, prompt length, time; for memory methods ``answer_attended`` and, when a wrong answer
  is a value copied from the context, ``wrong_value`` / ``wrong_value_attended``, see
  :mod:`memalign.bench.needle`). Items already there are skipped, so an interrupted sweep resumes
  where it stopped and a sweep re-run with more samples only computes the new ones. A last line cut
  off by a crash is dropped and its item redone;
* ``metrics.json``: written from the predictions when the directory is complete (mean score x 100,
  by depth, failures counted, timing).

The sample count is deliberately not in the name: sample ``i`` of a task is identical whatever the
count, so more samples extend the same directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import KW_ONLY, asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memalign.bench.loaders.common import suite_file
from memalign.bench.loaders.fingerprint import file_sha256, haystack_sha256, model_identity
from memalign.bench.loaders.haystack import read_haystack
from memalign.bench.methods import Budget, MemoryMethod, Method, is_memory_method, make_method
from memalign.bench.metrics import score_prediction
from memalign.bench.needle import answer_attended, text_token_spans, wrong_value
from memalign.bench.prompts import EncodedPrompt, encode, truncate_middle
from memalign.bench.records import Record, iter_jsonl, read_appended_jsonl
from memalign.bench.tasks.base import TaskContext, get_task
from memalign.errors import ConfigError, DataError, MemalignError
from memalign.progress import progress_bar
from memalign.text import model_slug  # re-exported: the report and the benchmark scripts import it from here

if TYPE_CHECKING:
    from memalign.scaleout.options import RayOptions

logger = logging.getLogger(__name__)

CONFIG_FILE, PREDICTIONS_FILE, METRICS_FILE = "config.yaml", "predictions.jsonl", "metrics.json"
DEFAULT_PREFILL_CHUNK = 2048
_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
# What a resume must find unchanged in config.yaml: everything a score depends on. (``samples`` is not
# among them: sample i is the same whatever the count, so more samples extend a folder.)
SCORE_KEYS = ("task", "length", "seed", "dtype_used", "model_identity", "data", "method_config")


def dtype_name(dtype: torch.dtype) -> str:
    """``bf16`` / ``fp16`` / ``fp32``: the short name result folders carry."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


@dataclass(frozen=True)
class RunConfig:
    """One task x length x method on one model: what a result directory is named after and records.

    ``data`` holds the content hashes of the files the items were read from (filled by :func:`run_sweep`).
    Every check that can fail runs here, before a model is loaded or a folder written: names, sizes, the
    memory methods' budget (as the EM engine will see it) and the dtype.
    """

    task: str
    length: int
    method: str
    model: str
    samples: int = 5
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    dtype: str = "auto"
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        task = get_task(self.task)
        for name in ("length", "samples", "seed", "prefill_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if self.samples <= 0:
            raise ConfigError(f"samples must be > 0, got {self.samples}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if task.synthetic and self.length <= 0:
            raise ConfigError(f"synthetic task {self.task!r} needs a target length > 0")
        if self.length < 0:
            raise ConfigError(f"length must be >= 0 (0 = no truncation for real suites), got {self.length}")
        method = make_method(self.method, self.budget, self.prefill_chunk)  # validates name and prefill_chunk
        if isinstance(method, MemoryMethod):
            method.em_config()  # the engine's own checks (e.g. n_mem below one event), before any model loads
        self.dtype_used()

    def dtype_used(self) -> str:
        """The dtype the model is loaded in: ``auto`` resolved for this machine's CPU."""
        from memalign.models.loading import resolve_dtype

        try:
            return dtype_name(resolve_dtype(self.dtype))
        except MemalignError as exc:
            raise ConfigError(f"dtype: {exc}") from None

    def name(self) -> str:
        parts = [self.task.replace(":", "-"), str(self.length), model_slug(self.model), self.method]
        if is_memory_method(self.method):
            parts.append(self.budget.tag())
        elif self.prefill_chunk != DEFAULT_PREFILL_CHUNK:
            parts.append(f"pc{self.prefill_chunk}")
        parts.append(self.dtype_used())
        if self.data:
            hashes = json.dumps(sorted(entry["sha256"] for entry in self.data.values()))
            parts.append("data-" + hashlib.sha256(hashes.encode()).hexdigest()[:8])
        parts.append(f"seed{self.seed}")
        return "__".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "budget": asdict(self.budget), "dtype_used": self.dtype_used(), "name": self.name()}

    def matching(self, model: PreTrainedModel) -> RunConfig:
        """This configuration for ``model``: ``auto`` becomes the dtype the weights are in; an explicit dtype
        the model is not in is refused (its folder would claim a dtype the scores were not computed in)."""
        return self.for_dtype(dtype_name(model.dtype))

    def for_dtype(self, used: str) -> RunConfig:
        """This configuration for weights in dtype ``used`` (``bf16`` ...), as :meth:`matching` explains; a
        Ray run asks its workers which dtype they loaded, since ``auto`` resolves on their hardware."""
        if self.dtype_used() == used:
            return self
        if self.dtype == "auto":
            return replace(self, dtype=used)
        raise ConfigError(
            f"RunConfig.dtype is {self.dtype} but the model's weights are {used}: load the model "
            f"in {self.dtype} or pass dtype={used!r}"
        )


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
    """Ids of the items answered in ``directory`` (a cut-off last line is dropped, its item redone)."""
    ids = set()
    path = directory / PREDICTIONS_FILE
    for row in read_appended_jsonl(path):
        if "id" not in row:
            raise DataError(f"{path}: a row without an id (was this file written by `memalign bench run`?)")
        ids.add(str(row["id"]))
    return ids


def _ends_only_this_item(exc: Exception) -> bool:
    """Out of memory on one long prompt, or a refusal memalign raised on purpose, fail that item (counted
    as a failure, never dropped); anything else is a bug that must stop the run, not become a score of 0."""
    if isinstance(exc, MemalignError | MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def predict_one(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, method: Method, record: Record, truncate: int = 0
) -> dict[str, Any]:
    """Answer one record; the returned row is what predictions.jsonl stores (scored)."""
    prompt = encode(tokenizer, record)
    prompt = truncate_middle(prompt, truncate - record.max_new_tokens if truncate else 0)
    input_ids = torch.tensor([prompt.input_ids], device=model.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    row: dict[str, Any] = {
        "id": record.id,
        "task": record.task,
        "metric": record.metric,
        "answer": record.answer,
        "meta": record.meta,
        "prompt_tokens": len(prompt),
        "method": method.name,
    }
    try:
        new_ids = method.generate(model, input_ids, record.max_new_tokens, stop_token_ids(model, tokenizer, record))
        row["prediction"] = tokenizer.decode(new_ids, skip_special_tokens=True)
        row["new_tokens"] = len(new_ids)
        row["score"] = score_prediction(record.metric, row["prediction"], record.answer, record.meta)
        attended = getattr(method, "last_attended", None)
        if attended is not None:
            row.update(_attention_evidence(tokenizer, record, prompt, row, attended))
    except Exception as exc:
        if not _ends_only_this_item(exc):
            raise
        logger.warning("%s: item %s failed: %s: %s", record.task, record.id, type(exc).__name__, exc)
        row.update(prediction="", new_tokens=0, score=0.0, error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = round(time.perf_counter() - start, 3)
    # process CPU time: on a machine shared with other jobs, wall seconds say more about the load than
    # about the method; with one torch thread CPU seconds are the method's own cost
    row["cpu_seconds"] = round(time.process_time() - cpu_start, 3)
    return row


def _attention_evidence(
    tokenizer: PreTrainedTokenizerBase,
    record: Record,
    prompt: EncodedPrompt,
    row: dict[str, Any],
    attended: list[list[tuple[int, int]]],
) -> dict[str, Any]:
    """``answer_attended`` (every gold answer found verbatim) and, for a wrong answer copied from the
    context, ``wrong_value`` / ``wrong_value_attended``: was that value in view? One tokenisation of the
    prompt locates both."""
    golds = [str(answer) for answer in record.answer]
    copied = wrong_value(row["prediction"], record) if row["score"] < 1 else None
    spans = text_token_spans(tokenizer, record, prompt, golds + ([copied] if copied else []))
    if spans is None:
        return {}
    evidence: dict[str, Any] = {}
    if golds and all(spans[: len(golds)]):
        evidence["answer_attended"] = answer_attended(spans[: len(golds)], attended)
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
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(directory / CONFIG_FILE)


def _plain(value: Any) -> Any:
    """The value as it reads back from YAML/JSON (tuples as lists), so recorded and new compare equal."""
    return json.loads(json.dumps(value))


def _differences(recorded: Any, new: Any, key: str) -> list[str]:
    if isinstance(recorded, dict) and isinstance(new, dict):
        return [
            d
            for k in sorted(set(recorded) | set(new), key=str)
            for d in _differences(recorded.get(k), new.get(k), f"{key}.{k}")
        ]
    return [] if recorded == new else [f"{key} ({recorded!r} recorded, {new!r} now)"]


def check_resume(directory: Path, config: dict[str, Any], keys: Iterable[str] = SCORE_KEYS) -> None:
    """Refuse to add items to a folder whose recorded configuration differs from ``config`` in a score key.

    A folder without a readable ``config.yaml`` but with predictions is refused too: nothing says what
    produced them. Raises :class:`ConfigError` naming the differing keys and what to do.
    """
    path = directory / CONFIG_FILE
    if not path.is_file():
        if (directory / PREDICTIONS_FILE).is_file():
            raise ConfigError(
                f"{directory} holds predictions but no {CONFIG_FILE}, so nothing says which "
                "configuration produced them: move the folder away or pass another --out"
            )
        return
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: not readable YAML ({type(exc).__name__}); repair it or move the folder away"
        ) from None
    if not isinstance(recorded, dict):
        raise DataError(f"{path}: not a mapping of configuration keys; repair it or move the folder away")
    keys = list(keys)
    missing = [k for k in keys if k not in recorded]
    if missing:
        raise ConfigError(
            f"{directory} was written without recording {', '.join(missing)}, so resuming it could "
            "mix two configurations: move the folder away or pass another --out (`memalign bench "
            "report` still reads it)"
        )
    diffs = [d for k in keys for d in _differences(_plain(recorded[k]), _plain(config[k]), k)]
    if diffs:
        raise ConfigError(
            f"{directory} holds results of another configuration; it differs in "
            f"{'; '.join(diffs)}. A resume only continues the configuration that started the "
            "folder: pass another --out or move the folder away"
        )


@dataclass
class FolderPlan:
    """One result folder about to be filled: its configuration, the items still to answer, and the writing.

    Built by :func:`plan_folder` once the folder is known to belong to the configuration; ``metrics`` is set
    when the folder is already complete (nothing to do). A local run and a Ray run share it, so they write
    the same files: rows appended one line each, in ``todo`` order, then ``metrics.json``.
    """

    cfg: RunConfig
    directory: Path
    config: dict[str, Any]
    todo: list[Record]
    truncate: int
    metrics: dict[str, Any] | None = None

    def start(self) -> None:
        """Record the configuration: from here on the folder is written."""
        write_config(self.directory, self.config)

    def append(self, row: dict[str, Any]) -> None:
        """Append one answered item (flushed at once: a crash loses at most the line being written)."""
        with (self.directory / PREDICTIONS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    def finish(self) -> dict[str, Any]:
        """(Re)write ``metrics.json`` from every prediction in the folder."""
        self.metrics = finalize(self.directory, self.config)
        return self.metrics


def plan_folder(
    cfg: RunConfig,
    records: list[Record],
    out: Path,
    identity: dict[str, Any],
    method_config: dict[str, Any],
) -> FolderPlan:
    """The folder ``out/<cfg.name()>`` for ``records``: refused if it holds another configuration
    (:func:`check_resume`), else the items it does not hold yet. Writes nothing.

    ``cfg`` already carries the dtype the model is in (:meth:`RunConfig.for_dtype`); ``identity`` is
    :func:`~memalign.bench.loaders.fingerprint.model_identity` of the loaded model.
    """
    directory = Path(out) / cfg.name()
    config = {**cfg.to_dict(), "model_identity": identity, "method_config": method_config, "n_records": len(records)}
    check_resume(directory, config)
    have = done_ids(directory)
    todo = [r for r in records if r.id not in have]
    truncate = cfg.length if not get_task(cfg.task).synthetic else 0
    plan = FolderPlan(cfg, directory, config, todo, truncate)
    if not todo and (directory / METRICS_FILE).is_file():
        logger.info("%s: done (%d items), skipped", cfg.name(), len(have))
        plan.metrics = json.loads((directory / METRICS_FILE).read_text())
    return plan


def run_records(
    cfg: RunConfig,
    records: list[Record],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    method: Method | None = None,
) -> dict[str, Any]:
    """Answer the records not yet in ``out/<cfg.name()>`` and (re)write its metrics.

    Nothing is written before the folder is known to belong to this configuration (:func:`check_resume`).
    """
    cfg = cfg.matching(model)
    method = method or make_method(cfg.method, cfg.budget, cfg.prefill_chunk)
    plan = plan_folder(cfg, records, out, model_identity(cfg.model, model), method.config())
    if plan.metrics is not None:
        return plan.metrics
    plan.start()
    with progress_bar(f"{cfg.task} {cfg.length} {cfg.method}", total=len(plan.todo)) as advance:
        for k, record in enumerate(plan.todo, 1):
            row = predict_one(model, tokenizer, method, record, plan.truncate)
            plan.append(row)
            advance(1)
            logger.debug(
                "%s %d/%d score=%.2f %d tok %.1fs %s",
                cfg.name(),
                k,
                len(plan.todo),
                row["score"],
                row["prompt_tokens"],
                row["seconds"],
                row.get("error", ""),
            )
    return plan.finish()


@dataclass(frozen=True)
class _RecordingContext(TaskContext):
    """A :class:`TaskContext` that notes which tasks read the essay folder, so a result folder records (and
    is named after) exactly the data its items came from: a task that never reads the essays keeps one
    folder whether or not ``--haystack`` is given."""

    haystack_readers: set[str] = field(default_factory=set, compare=False)

    def require_haystack(self, task: str) -> Path:
        folder = super().require_haystack(task)
        self.haystack_readers.add(task)
        return folder


def _data_identity(task: str, ctx: _RecordingContext, haystack_hash: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    path = suite_file(task, ctx.data_dir)
    if path is not None:
        data["data_file"] = {"path": str(path.resolve()), "sha256": file_sha256(path)}
    if task in ctx.haystack_readers and ctx.haystack_dir is not None:
        data["haystack"] = {"path": str(Path(ctx.haystack_dir).resolve()), "sha256": haystack_hash}
    return data


def _check_inputs(
    tasks: list[str], out: Path, haystack: Path | None, data_dir: Path | None, depths: tuple[float, ...] | None
) -> str | None:
    """Every input file and folder the sweep will read, checked before a model loads; the essays' hash."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder for the results")
    if depths is not None and (not depths or any(not 0.0 <= d <= 1.0 for d in depths)):
        raise ConfigError(f"--depths must be fractions in [0, 1], got {list(depths)}")
    for task in tasks:
        suite_file(task, data_dir)  # a missing --data-dir or file fails now, naming where to put it
    if haystack is None:
        return None
    read_haystack(haystack)
    return haystack_sha256(haystack)


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: every task x length x method of ``model_name``, its results written under ``out``; the
    rest is keyword-only. :func:`sweep_configs` and :func:`run_sweep` take these arguments, and
    :func:`~memalign.bench.export.export_records` those that make the records."""

    tasks: Iterable[str]
    lengths: Iterable[int]
    methods: Iterable[str]
    model_name: str
    out: Path
    _: KW_ONLY
    samples: int = 5
    seed: int = 0
    budget: Budget | None = None
    dtype: str = "auto"
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    haystack: Path | None = None
    data_dir: Path | None = None
    depths: tuple[float, ...] | None = None


def sweep_configs(*args: Any, **options: Any) -> tuple[list[RunConfig], str | None]:
    """Every task x length x method configuration of the :class:`SweepSpec` the arguments make, checked with
    the input files before a model loads; and the essays' hash (None without ``haystack``)."""
    spec = SweepSpec(*args, **options)
    budget = spec.budget or Budget()
    tasks, lengths, methods = list(spec.tasks), list(spec.lengths), list(spec.methods)
    configs = [
        RunConfig(t, n, m, spec.model_name, spec.samples, spec.seed, budget, spec.dtype, spec.prefill_chunk)
        for t in tasks
        for n in lengths
        for m in methods
    ]  # validate everything before loading
    if not configs:
        raise ConfigError("nothing to run: give at least one task, length and method")
    return configs, _check_inputs(tasks, Path(spec.out), spec.haystack, spec.data_dir, spec.depths)


def sweep_cells(
    configs: list[RunConfig],
    tokenizer: PreTrainedTokenizerBase,
    *,
    haystack: Path | None = None,
    data_dir: Path | None = None,
    depths: tuple[float, ...] | None = None,
    haystack_hash: str | None = None,
) -> Iterator[tuple[RunConfig, list[Record]]]:
    """Each configuration with its records (and the data they came from in ``data``); the records of a
    task and length are generated once for all its methods."""
    ctx = _RecordingContext(tokenizer, haystack_dir=haystack, data_dir=data_dir, depths=depths)
    cache: dict[tuple[str, int], tuple[list[Record], dict[str, Any]]] = {}
    for cfg in configs:
        key = (cfg.task, cfg.length)
        if key not in cache:
            cache.clear()
            records = get_task(cfg.task).records(ctx, cfg.length, cfg.samples, cfg.seed)
            cache[key] = records, _data_identity(cfg.task, ctx, haystack_hash)
        records, data = cache[key]
        yield replace(cfg, data=data), records


def run_sweep(*args: Any, ray: RayOptions | None = None, **options: Any) -> list[dict[str, Any]]:
    """Load the model once; per task and length generate the records once and run every method on them.

    Everything that can be checked without the model is checked first (names, budgets, dtype, input
    files), so an impossible sweep fails in seconds and leaves no folder behind. With ``ray`` the items of
    every configuration are answered by workers of a Ray cluster (:mod:`memalign.scaleout`), which write
    the same folders as this process would.
    """
    spec = SweepSpec(*args, **options)
    configs, haystack_hash = sweep_configs(*args, **options)
    inputs = {
        "haystack": spec.haystack,
        "data_dir": spec.data_dir,
        "depths": spec.depths,
        "haystack_hash": haystack_hash,
    }
    if ray is not None:
        from memalign.scaleout.bench import run_sweep_on_ray

        return run_sweep_on_ray(configs, Path(spec.out), ray, **inputs)
    from memalign.models import load_model

    model, tokenizer = load_model(spec.model_name, dtype=spec.dtype)
    return [
        run_records(cfg, records, model, tokenizer, Path(spec.out))
        for cfg, records in sweep_cells(configs, tokenizer, **inputs)
    ]
