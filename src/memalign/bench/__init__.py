"""Long-context evaluation: tokenizer-calibrated synthetic tasks, LongBench/InfiniteBench loaders,
the original benchmarks' metrics, a method-comparison runner with resumable result folders, reports."""

from memalign.bench.methods import METHODS, Budget, Method, make_method
from memalign.bench.metrics import METRICS, get_metric, score_prediction
from memalign.bench.records import Record, read_records, write_records
from memalign.bench.runner import RunConfig, run_records, run_sweep
from memalign.bench.tasks import TASKS, TaskContext, get_task, list_tasks

__all__ = [
    "METHODS",
    "METRICS",
    "TASKS",
    "Budget",
    "Method",
    "Record",
    "RunConfig",
    "TaskContext",
    "get_metric",
    "get_task",
    "list_tasks",
    "make_method",
    "read_records",
    "run_records",
    "run_sweep",
    "score_prediction",
    "write_records",
]
