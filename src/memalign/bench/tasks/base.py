"""Task registry and the machinery shared by the synthetic generators.

A task turns ``(tokenizer, target length, number of samples, seed)`` into :class:`Record`s. The
synthetic ones are calibrated to the model's own tokenizer like RULER: a sample's random content is
drawn first (independently of the length), then the amount of filler is searched so that the
*templated* prompt plus the generation budget fits the target length. Sample ``i`` is the same
whatever ``n`` is, so a sweep can be extended with more samples and resume.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from memalign.bench.prompts import count_tokens
from memalign.bench.records import Record
from memalign.errors import ConfigError, DataError
from memalign.registry import Registry


@dataclass(frozen=True)
class TaskContext:
    """What a task may need besides length and seed: the tokenizer and where local data lives."""

    tokenizer: PreTrainedTokenizerBase
    haystack_dir: Path | None = None
    data_dir: Path | None = None
    depths: tuple[float, ...] | None = None  # needle depths in [0, 1]; None = the task's default

    def __post_init__(self) -> None:
        if self.depths is not None and any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ConfigError(f"needle depths must lie in [0, 1], got {self.depths}")

    def require_haystack(self, task: str) -> Path:
        if self.haystack_dir is None:
            raise ConfigError(
                f"task {task!r} needs real text: pass --haystack DIR (a folder of .txt files, e.g. Paul Graham essays)"
            )
        return self.haystack_dir


class Task(ABC):
    """One benchmark task. Subclasses set ``name``/``description`` (on the class, or on the instance for
    one class serving several tasks) and implement :meth:`records`."""

    name: str
    description: str
    synthetic: bool = True
    metric: str  # what :meth:`record` scores its records by
    max_new_tokens: int  # and how many tokens it lets them generate

    @abstractmethod
    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        """``n`` records whose prompts (plus generation budget) fit ``length`` tokens."""

    def record(self, length: int, i: int, prompt: tuple[str, str, str], answer: list[Any], /, **meta: Any) -> Record:
        """Sample ``i``'s record at ``length``, scored by :attr:`metric`: ``prompt`` is its context, question
        and answer prefix; ``meta`` its task facts, in the order given."""
        context, question, answer_prefix = prompt
        task, metric, max_new_tokens = self.name, self.metric, self.max_new_tokens
        return Record(
            context, question, answer_prefix, answer, max_new_tokens, task, metric, f"{task}-{length}-{i}", meta=meta
        )


TASKS: Registry[Task] = Registry("task", hint="(`memalign bench tasks` lists them)")


def add_task(task: Task) -> Task:
    """Register a task instance under its name; a second task under a taken name raises."""
    return TASKS.add(task.name, task)


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: instantiate the task and register it under ``cls.name``."""
    add_task(cls())
    return cls


def get_task(name: str) -> Task:
    """The task registered as ``name``; an unknown name raises :class:`UnknownNameError` listing the known."""
    _load_builtin_tasks()
    return TASKS[name]


def list_tasks() -> dict[str, Task]:
    """Every task, by name in name order."""
    _load_builtin_tasks()
    return {name: TASKS[name] for name in sorted(TASKS)}


def _load_builtin_tasks() -> None:
    # Importing the modules runs their @register_task decorators.
    from memalign.bench.loaders import infinitebench, longbench  # noqa: F401
    from memalign.bench.tasks import infinitebench as ib_synthetic  # noqa: F401
    from memalign.bench.tasks import niah, passkey, ruler  # noqa: F401


def sample_rng(seed: int, task: str, index: int) -> random.Random:
    """Per-sample RNG: sample ``index`` does not depend on how many samples are drawn, nor on length."""
    return random.Random(f"{seed}/{task}/{index}")


def spread_depths(ctx: TaskContext, n: int, default: tuple[float, ...] | None = None) -> list[float]:
    """Depth of each of the records: ``n`` per depth of the grid if one is given, else ``n`` spread over [0, 1].

    The depth of record ``i`` never depends on ``n``, so a sweep re-run with more samples (the runner
    resumes by record id) extends a result folder with new depths instead of mixing two layouts: the grid
    is cycled (all depths once, then again), and without a grid the depths are 0.5, 0, 1, then the van
    der Corput sequence 0.25, 0.75, 0.125, 0.625, ... (every prefix is spread over [0, 1]).
    """
    grid = ctx.depths if ctx.depths is not None else default
    if grid is not None:
        return [grid[i % len(grid)] for i in range(n * len(grid))]
    return [_spread_depth(i) for i in range(n)]


def _spread_depth(i: int) -> float:
    if i < 3:
        return (0.5, 0.0, 1.0)[i]
    k, depth, base = i - 1, 0.0, 0.5
    while k:  # van der Corput, base 2, of i - 1 >= 2: 0.25, 0.75, 0.125, 0.625, ...
        depth += base * (k & 1)
        k, base = k >> 1, base / 2
    return depth


Builder = Callable[[int], Record]
"""One sample's record as a function of its filler size (units of noise, sentences, words, pairs)."""


def fit_each(ctx: TaskContext, length: int, builders: Iterable[Builder], filler: str) -> list[Record]:
    """Each sample's record at the largest filler size that fits ``length``, in order. One :class:`Fitter`
    serves them all: samples of one length differ by a few tokens, so its last answer seeds the next search."""
    fitter = Fitter(ctx.tokenizer, length)
    return [fitter.fit(build, filler) for build in builders]


class SampledTask(Task):
    """A synthetic task drawn sample by sample: :meth:`sample` draws sample ``i``'s content from its own
    RNG (so it does not depend on ``n`` or the length) and returns its record as a function of the filler
    size, which :func:`fit_each` then calibrates."""

    filler: str = "filler"  # what grows with the length, named when even none of it fits

    def records(self, ctx: TaskContext, length: int, n: int, seed: int) -> list[Record]:
        return fit_each(ctx, length, (self.sample(ctx, length, seed, i) for i in range(n)), self.filler)

    @abstractmethod
    def sample(self, ctx: TaskContext, length: int, seed: int, i: int) -> Builder:
        """Draw sample ``i``; return its record for a filler size."""


class Fitter:
    """Finds the largest filler size whose record fits the token budget (RULER's calibration).

    Keeps the last answer as the next search's starting point: samples of one length differ by a
    few tokens, so each further sample costs two or three tokenisations instead of a full search.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, length: int) -> None:
        self.tokenizer, self.length = tokenizer, length
        self._guess: int | None = None

    def size(self, record: Record) -> int:
        return count_tokens(self.tokenizer, record) + record.max_new_tokens

    def fits(self, record: Record) -> bool:
        return self.size(record) <= self.length

    def fit(self, build: Callable[[int], Record], what: str = "filler") -> Record:
        empty = self.size(build(0))
        if empty > self.length:
            raise DataError(
                f"{build(0).task}: even with no {what} the prompt needs {empty} tokens, "
                f"more than the target length {self.length}"
            )
        guess = self._guess
        if guess is None:  # extrapolate from the cost of 64 units
            per_unit = max(1e-3, (self.size(build(64)) - empty) / 64)
            guess = max(1, int((self.length - empty) / per_unit))
        if (lo_size := self.size(build(guess))) <= self.length:
            lo, hi = guess, guess + max(1, guess // 50)
            while (hi_size := self.size(build(hi))) <= self.length:
                if hi_size == lo_size:  # more units add nothing: the filler ran out before the length did
                    self._guess = lo
                    return build(lo)
                lo, hi, lo_size = hi, hi + max(1, (hi - lo) * 2), hi_size
        else:
            hi, lo = guess, int(guess * 0.98)
            while lo > 0 and not self.fits(build(lo)):
                hi, lo = lo, int(lo * 0.8)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.fits(build(mid)):
                lo = mid
            else:
                hi = mid
        self._guess = lo
        return build(lo)
