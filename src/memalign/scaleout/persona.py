"""``memalign persona eval --ray``: subjects answered by Ray workers, written as a local run writes.

Each worker builds the run's :class:`~memalign.persona.evaluation.EvalSetup` around its own copy of the
model (loaded once) and prepares the modes (fits the predictors on the population); a subject is one task,
answered by :func:`~memalign.persona.evaluation.runner.evaluate_subject` exactly as in a local run. The
driver writes the records in subject order (:func:`~memalign.persona.evaluation.runner.run_eval`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from memalign.persona.evaluation.modes import EvalMode, get_mode
from memalign.persona.evaluation.runner import SubjectTask, evaluate_subject, model_config
from memalign.persona.evaluation.setup import EvalSetup
from memalign.scaleout.cluster import connect, worker_count
from memalign.scaleout.options import RayOptions
from memalign.scaleout.pool import ModelWorker, WorkerPool

logger = logging.getLogger(__name__)


def setup_arguments(setup: EvalSetup) -> dict[str, Any]:
    """Everything of ``setup`` but the model: what a worker needs to build the same setup around its own.

    Every :class:`EvalSetup` argument is kept as the attribute of its name, so a new argument travels to
    the workers without being listed here too."""
    names = [name for name in inspect.signature(EvalSetup).parameters if name not in ("model", "tokenizer")]
    return {name: getattr(setup, name) for name in names}


class PersonaWorker(ModelWorker):
    """A Ray actor holding the model (when a mode needs one) and the prepared modes of one run."""

    def __init__(
        self,
        setup_args: dict[str, Any],
        modes: dict[str, str],
        model_name: str | None,
        dtype: str,
        device: str,
        unparsed: str,
        keep_predictions: bool,
        threads: int,
    ) -> None:
        self.setup_args, self.mode_names, self.model_name = setup_args, modes, model_name
        self.dtype, self.device, self.unparsed, self.keep_predictions = dtype, device, unparsed, keep_predictions
        super().__init__(threads)

    def load(self) -> None:
        self.modes: dict[str, EvalMode] = {key: get_mode(name) for key, name in self.mode_names.items()}
        model = tokenizer = None
        if any(obj.needs_model for obj in self.modes.values()):
            from memalign.models.loading import load_model

            model, tokenizer = load_model(self.model_name, dtype=self.dtype, device=self.device)
        self.setup = EvalSetup(model=model, tokenizer=tokenizer, **self.setup_args)
        for obj in self.modes.values():
            obj.prepare(self.setup)

    def identity(self) -> dict[str, Any] | None:
        """The model record of the run configuration (weights sha256 included); None without a model."""
        return model_config(self.model_name, self.setup.model) if self.setup.model is not None else None

    def evaluate(self, task: SubjectTask) -> dict[str, dict[str, Any]]:
        person, pending = task
        return evaluate_subject(self.setup, self.modes, person, pending, self.unparsed, self.keep_predictions)


@dataclass
class RaySubjects:
    """The :class:`~memalign.persona.evaluation.runner.SubjectSource` of a Ray run."""

    ray: ModuleType
    pool: WorkerPool
    options: RayOptions

    def model_record(self) -> Mapping[str, Any] | None:
        return self.pool.identity

    def prepare(self) -> None:
        """Nothing here: every worker prepared the modes when it started (a failure stopped the run)."""

    def results(self, tasks: Sequence[SubjectTask]) -> Iterator[tuple[int, dict[str, dict[str, Any]]]]:
        if not tasks:
            return
        self.pool.add(worker_count(self.ray, self.options, len(tasks)) - 1)
        yield from self.pool.map("evaluate", tasks, lambda n: f"subject {tasks[n][0].subject_id}")

    def status(self) -> str:
        return self.pool.status()


@contextmanager
def ray_subjects(
    options: RayOptions,
    setup: EvalSetup,
    modes: Mapping[str, EvalMode],
    model: str | None,
    dtype: str,
    device: str,
    unparsed: str,
    keep_predictions: bool,
    worker_class: type[PersonaWorker] = PersonaWorker,
) -> Iterator[RaySubjects]:
    """Workers of ``worker_class`` on the cluster of ``options``, the first one ready (its model's record is
    known before the output folder is checked); more start when the subjects to do are known."""
    if any(obj.needs_model for obj in modes.values()):
        options.check_device(device)
    names = {key: type(obj).name for key, obj in modes.items()}
    args = (setup_arguments(setup), names, model, dtype, device, unparsed, keep_predictions, options.worker_threads)
    with connect(options) as ray:
        worker_count(ray, options, 1)  # refuse a worker the cluster cannot place before waiting on one
        with WorkerPool(ray, worker_class, args, options) as pool:
            pool.add(1)
            pool.first_ready()
            yield RaySubjects(ray, pool, options)
            pool.log_throughput()
