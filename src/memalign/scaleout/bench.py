"""``memalign bench run --ray``: the items of a sweep answered by Ray workers, written as a local run writes.

The driver checks the sweep as a local run does, starts one worker (for the tokenizer and the model's
identity), generates the records, decides per folder what is still to do (:func:`~memalign.bench.runner.
plan_folder`), then streams every item of every folder through all workers. Rows come back in any order;
each folder's rows are appended in its ``todo`` order (early ones wait), so a folder holds the same
lines as after a local run, and an interrupted driver leaves a prefix that a resume completes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memalign.bench.methods import Budget, Method, make_method
from memalign.bench.records import Record
from memalign.bench.runner import FolderPlan, RunConfig, plan_folder, predict_one, sweep_cells
from memalign.progress import progress_bar
from memalign.scaleout.cluster import connect, worker_count
from memalign.scaleout.options import RayOptions
from memalign.scaleout.ordered import InOrder
from memalign.scaleout.pool import ModelWorker, WorkerPool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchItem:
    """One record to answer with one method: what a worker needs besides its model."""

    method: str
    budget: Budget
    prefill_chunk: int
    record: Record
    truncate: int


class BenchWorker(ModelWorker):
    """A Ray actor holding the model: answers :class:`BenchItem` s with :func:`predict_one`."""

    def __init__(self, model_name: str, dtype: str, device: str, threads: int) -> None:
        self.model_name, self.dtype, self.device = model_name, dtype, device
        self._methods: dict[tuple[str, Budget, int], Method] = {}
        super().__init__(threads)

    def load(self) -> None:
        from memalign.models import load_model

        self.model, self.tokenizer = load_model(self.model_name, dtype=self.dtype, device=self.device)

    def identity(self) -> dict[str, Any]:
        from memalign.bench.loaders.fingerprint import model_identity
        from memalign.bench.runner import dtype_name

        return {
            "dtype_used": dtype_name(self.model.dtype),
            "model_identity": model_identity(self.model_name, self.model),
        }

    def get_tokenizer(self) -> Any:
        """The tokenizer the driver generates the records with: the workers' own, so prompts match."""
        return self.tokenizer

    def predict(self, item: BenchItem) -> dict[str, Any]:
        key = (item.method, item.budget, item.prefill_chunk)
        if key not in self._methods:  # one method object per configuration, as a local run keeps
            self._methods[key] = make_method(item.method, item.budget, item.prefill_chunk)
        return predict_one(self.model, self.tokenizer, self._methods[key], item.record, item.truncate)


def run_sweep_on_ray(
    configs: list[RunConfig],
    out: Path,
    options: RayOptions,
    *,
    haystack: Path | None = None,
    data_dir: Path | None = None,
    depths: tuple[float, ...] | None = None,
    haystack_hash: str | None = None,
    worker_class: type[BenchWorker] = BenchWorker,
) -> list[dict[str, Any]]:
    """Run checked ``configs`` (see :func:`~memalign.bench.runner.sweep_configs`) on the cluster of
    ``options``; return each configuration's metrics, in ``configs`` order, as :func:`run_sweep` does.

    ``worker_class`` may be a subclass of :class:`BenchWorker` (one that adds checks or instrumentation).
    """
    device = "cuda" if options.worker_gpus > 0 else "cpu"
    model_name, dtype = configs[0].model, configs[0].dtype
    with connect(options) as ray:
        worker_count(ray, options, 1)  # refuse a worker the cluster cannot place before waiting on one
        with WorkerPool(ray, worker_class, (model_name, dtype, device, options.worker_threads), options) as pool:
            pool.add(1)
            tokenizer = ray.get(pool.first_ready().get_tokenizer.remote())
            identity = pool.identity
            plans = [
                plan_folder(
                    cfg.for_dtype(identity["dtype_used"]),
                    records,
                    out,
                    identity["model_identity"],
                    make_method(cfg.method, cfg.budget, cfg.prefill_chunk).config(),
                )
                for cfg, records in sweep_cells(
                    configs, tokenizer, haystack=haystack, data_dir=data_dir, depths=depths, haystack_hash=haystack_hash
                )
            ]
            todo = [(n, plan, record) for n, plan in enumerate(plans) if plan.metrics is None for record in plan.todo]
            pool.add(worker_count(ray, options, len(todo)) - 1)
            _answer(pool, plans, todo)
            pool.log_throughput()
    return [plan.metrics or {} for plan in plans]


def _answer(pool: WorkerPool, plans: list[FolderPlan], todo: list[tuple[int, FolderPlan, Record]]) -> None:
    """Stream ``todo`` through the workers; write each folder's rows in order and finish each folder once
    its last row is in."""
    items = [BenchItem(p.cfg.method, p.cfg.budget, p.cfg.prefill_chunk, r, p.truncate) for _, p, r in todo]
    position = {}  # global item index -> its index within its folder's todo
    counts = [0] * len(plans)
    for index, (n, _, _) in enumerate(todo):
        position[index] = counts[n]
        counts[n] += 1
    buffers = {n: InOrder[dict[str, Any]]() for n in range(len(plans))}
    written = [0] * len(plans)
    for plan in plans:
        if plan.metrics is None:
            plan.start()
            if not plan.todo:
                plan.finish()
    failed = 0

    def describe(index: int) -> str:
        _, plan, record = todo[index]
        return f"item {record.id} of {plan.cfg.name()}"

    with progress_bar(
        f"{len(plans)} configurations on Ray",
        total=len(todo),
        unit="items",
        extra=lambda: f"failed {failed} | {pool.status()}",
    ) as advance:
        for index, row in pool.map("predict", items, describe):
            n, plan, _ = todo[index]
            for ready in buffers[n].add(position[index], row):
                plan.append(ready)
                written[n] += 1
                failed += bool(ready.get("error"))
            if written[n] == len(plan.todo) and plan.todo:
                plan.finish()
            advance(1)
