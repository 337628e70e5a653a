"""Benchmark tasks: a registry of generators (synthetic) and loaders (LongBench, InfiniteBench)."""

from memalign.bench.tasks.base import TASKS, Task, TaskContext, get_task, list_tasks, register_task

__all__ = ["TASKS", "Task", "TaskContext", "get_task", "list_tasks", "register_task"]
