"""A pool of Ray actors, each holding one loaded model, that items stream through.

Each worker is an actor that loads the model once (:class:`ModelWorker`) and answers one item at a time;
the driver keeps every worker busy, collects results as they finish and hands them out with their item
index (the caller restores the order, see :mod:`memalign.scaleout.ordered`). Faults:

* a worker process that dies mid-item (killed, out of memory) is restarted by Ray and its item goes back
  to the front of the queue for the next free worker; an item that has killed ``max_attempts`` workers
  ends the run with a :class:`~memalign.errors.WorkerError` instead of killing them all in turn;
* a worker that cannot load the model reports the load error instead of dying, and the run stops with
  that message;
* a worker that raises on an item stops the run as a local run would: a memalign error as itself, any
  other exception as a :class:`~memalign.errors.WorkerError` carrying the worker's message (its
  traceback is logged).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from memalign.errors import MemalignError, WorkerError
from memalign.scaleout.options import RayOptions

logger = logging.getLogger(__name__)

_WAIT_SECONDS = 10.0  # how often the driver wakes without a result: start timeout, throughput lines
_THROUGHPUT_LOG_SECONDS = 300.0
_RESTART_POLL_SECONDS = 0.5  # a call to a restarting worker fails at once; the driver asks again after this


class ModelWorker:
    """Base of the worker actors: loads the model once in the constructor and keeps it for every item.

    A load failure is kept (``self.error``) rather than raised: an actor whose constructor raises dies, and
    Ray would report the death, not the reason. :meth:`ready` hands the reason to the driver.
    """

    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.error: str | None = None
        try:
            self.load()
        except Exception as exc:  # reported by ready(): the driver stops the run with this message
            if not isinstance(exc, MemalignError):  # a refusal says all; anything else may be a bug
                logger.exception("the worker could not load its model")
            self.error = f"{type(exc).__name__}: {exc}"

    def load(self) -> None:
        """Load what every item needs (model, tokenizer, per-run state)."""
        raise NotImplementedError

    def identity(self) -> Any:
        """What must be equal on every worker for their results to mix (model fingerprint, dtype)."""
        return None

    def ready(self) -> dict[str, Any]:
        """Where this worker runs, and its identity or its load error."""
        import ray

        info: dict[str, Any] = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "error": self.error,
        }
        if self.error is None:
            info["identity"] = self.identity()
        return info


@dataclass
class _Worker:
    """The driver's view of one actor."""

    number: int
    actor: Any
    info: dict[str, Any] | None = None  # set when ready; cleared when it dies
    busy: bool = False
    gone: bool = False  # died more often than Ray restarts it
    items: int = 0
    since: float = 0.0

    def place(self) -> str:
        if not self.info:
            return f"worker {self.number}"
        return f"worker {self.number} (node {self.info['node_id'][:8]} {self.info['ip']}, pid {self.info['pid']})"


class WorkerPool:
    """Actors of ``worker_class`` built with ``args``, each reserving the resources ``options`` names.

    Use as a context manager (the actors are killed on exit); :meth:`add` starts workers, :meth:`first_ready`
    waits for one, :meth:`map` streams items through all of them.
    """

    def __init__(self, ray: ModuleType, worker_class: type[ModelWorker], args: Sequence[Any], options: RayOptions):
        self._ray, self._options, self._args = ray, options, tuple(args)
        self._actor_class = ray.remote(worker_class).options(
            num_cpus=options.worker_cpus,
            num_gpus=options.worker_gpus,
            max_restarts=options.max_attempts,
            max_task_retries=0,  # the driver re-queues a dead worker's item, so it can go to another worker
        )
        self._workers: list[_Worker] = []
        self._pending: dict[Any, tuple[_Worker, int | None]] = {}  # ref -> (worker, item index | None = ready)
        self._identity: tuple[Any, str] | None = None
        self._started = time.monotonic()
        self.retried = 0

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self._workers:
            try:
                self._ray.kill(worker.actor)
            except Exception as err:  # already gone: nothing to free
                logger.debug("could not kill %s: %s", worker.place(), err)

    # ---- workers --------------------------------------------------------------------------------------
    def add(self, n: int) -> None:
        """Start ``n`` more workers (each loads the model in the background)."""
        for _ in range(max(0, n)):
            worker = _Worker(len(self._workers) + 1, self._actor_class.remote(*self._args))
            self._workers.append(worker)
            self._pending[worker.actor.ready.remote()] = (worker, None)

    def first_ready(self) -> Any:
        """The actor of the first worker that has loaded its model (to ask it about the model)."""
        while True:
            ready = [w for w in self._workers if w.info is not None]
            if ready:
                return ready[0].actor
            for _ in self._step(deque(), Counter(), str):
                raise AssertionError("no item was submitted")  # pragma: no cover

    @property
    def identity(self) -> Any:
        """The identity every ready worker reported (:meth:`ModelWorker.identity`); None before one is ready."""
        return self._identity[0] if self._identity else None

    def status(self) -> str:
        """One line for a progress bar: retries, and each worker's items and throughput."""
        now = time.monotonic()
        parts = [f"retried {self.retried}"] if self.retried else []
        for w in self._workers:
            rate = w.items / (now - w.since) if w.info and now > w.since else 0.0
            state = "dead" if w.gone else f"{w.items} ({rate:.2f}/s)" if w.info else "starting"
            parts.append(f"w{w.number}@{w.info['ip'] if w.info else '?'} {state}")
        return " | ".join(parts)

    def log_throughput(self) -> None:
        """One line per worker: where it ran, items done, items per second since it was ready."""
        now = time.monotonic()
        for w in self._workers:
            if not w.since:
                logger.info("%s: not ready before the items ran out (or died), 0 items", w.place())
                continue
            seconds = now - w.since
            rate = w.items / seconds if seconds > 0 else 0.0
            logger.info("%s: %d items in %.0f s, %.3f items/s", w.place(), w.items, seconds, rate)

    # ---- items ---------------------------------------------------------------------------------------
    def map(self, method: str, items: Sequence[Any], describe: Callable[[int], str]) -> Iterator[tuple[int, Any]]:
        """Run ``worker.<method>(item)`` for every item; yield ``(index, result)`` as each finishes.

        Every index is yielded exactly once (a retried item's earlier attempt died without a result).
        ``describe(index)`` names an item in messages.
        """
        queue = deque(range(len(items)))
        attempts: Counter[int] = Counter()
        last_log = time.monotonic()
        while queue or any(index is not None for _, index in self._pending.values()):
            for worker in self._workers:
                if queue and worker.info is not None and not worker.busy and not worker.gone:
                    index = queue.popleft()
                    self._pending[getattr(worker.actor, method).remote(items[index])] = (worker, index)
                    worker.busy = True
            yield from self._step(queue, attempts, describe)
            if time.monotonic() - last_log > _THROUGHPUT_LOG_SECONDS:
                self.log_throughput()
                last_log = time.monotonic()

    def _step(self, queue: deque[int], attempts: Counter[int], describe: Callable[[int], str]) -> Iterator[tuple]:
        """Wait for one call to finish and handle it: a result is yielded, a death re-queues, an error raises."""
        if not self._pending:
            raise WorkerError("every worker died; see the log lines above for their errors")
        done, _ = self._ray.wait(list(self._pending), num_returns=1, timeout=_WAIT_SECONDS)
        if not done:
            self._check_start_timeout()
            return
        ref = done[0]
        worker, index = self._pending.pop(ref)
        try:
            value = self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            self._on_death(worker, index, queue, attempts, describe, exc)
            return
        except self._ray.exceptions.RayTaskError as exc:
            raise self._task_error(worker, index, describe, exc) from None
        if index is None:
            self._on_ready(worker, value)
            return
        worker.busy = False
        worker.items += 1
        yield index, value

    def _check_start_timeout(self) -> None:
        if any(w.info is not None for w in self._workers):
            return
        waited = time.monotonic() - self._started
        if waited > self._options.start_timeout:
            raise WorkerError(
                f"no worker loaded the model within {self._options.start_timeout:g} s; `ray status` shows "
                "whether the cluster can place a worker with the CPUs/GPUs asked (--worker-cpus, --worker-gpus)"
            )
        logger.info("waiting for the first worker to load the model (%.0f s so far)", waited)

    def _on_ready(self, worker: _Worker, info: dict[str, Any]) -> None:
        worker.info = info
        if info["error"] is not None:
            raise WorkerError(f"{worker.place()} could not load the model: {info['error']}")
        if self._identity is None:
            self._identity = (info["identity"], worker.place())
        elif info["identity"] != self._identity[0]:
            raise WorkerError(
                f"{worker.place()} loaded another model than {self._identity[1]} "
                f"({info['identity']} vs {self._identity[0]}): install the same model files on every node, "
                "or pass an explicit --dtype when nodes differ in hardware"
            )
        worker.since = time.monotonic()
        logger.info("%s is ready", worker.place())

    def _on_death(
        self,
        worker: _Worker,
        index: int | None,
        queue: deque[int],
        attempts: Counter[int],
        describe: Callable[[int], str],
        exc: Exception,
    ) -> None:
        """A call failed because its worker died (or is restarting): re-queue its item, then wait for Ray
        to restart the worker; a worker Ray will not restart again is dropped."""
        place = worker.place()
        worker.info, worker.busy = None, False
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if index is not None:
            attempts[index] += 1
            if attempts[index] >= self._options.max_attempts:
                raise WorkerError(
                    f"{describe(index)}: its worker died {attempts[index]} times while answering it "
                    f"(last: {place}: {reason}); it may need more memory than a worker has"
                )
            queue.appendleft(index)
            self.retried += 1
            logger.warning(
                "%s died while on %s (%s); the item goes to the next free worker", place, describe(index), reason
            )
        if isinstance(exc, self._ray.exceptions.ActorDiedError):  # Ray gave up restarting it
            worker.gone = True
            logger.warning("%s is dead and not restarted again: %s", place, reason)
            if all(w.gone for w in self._workers):
                raise WorkerError(f"every worker died (last: {place}: {reason})")
            return
        if index is None:  # asked while Ray restarts it: ask again shortly
            time.sleep(_RESTART_POLL_SECONDS)
        self._pending[worker.actor.ready.remote()] = (worker, None)  # answers once Ray has restarted it

    def _task_error(self, worker: _Worker, index: int | None, describe: Callable[[int], str], exc: Any) -> Exception:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, MemalignError):
            return cause
        logger.error("%s failed; its traceback:\n%s", worker.place(), exc)
        what = describe(index) if index is not None else "starting"
        message = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).strip().splitlines()[-1]
        return WorkerError(f"{worker.place()} failed on {what}: {message}")
