"""What a ``--ray`` run asks of the cluster: where it is, how many workers and what each one reserves."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from memalign.errors import ConfigError

LOCAL, AUTO = "local", "auto"


@dataclass(frozen=True)
class RayOptions:
    """A Ray run's cluster and worker settings (``memalign ... --ray ADDRESS``).

    ``address``: ``local`` starts a cluster inside this process (this machine's CPUs and GPUs), ``auto``
    joins the cluster this machine belongs to (``ray start``), anything else is a cluster address
    (``host:6379`` or ``ray://host:10001``). ``workers``: how many model-holding workers (0: as many as
    the cluster's resources fit, at most one per item). Each worker reserves ``worker_cpus`` CPUs and
    ``worker_gpus`` GPUs for its whole life and loads the model once. ``threads`` sets torch's threads in
    a worker (0: ``worker_cpus``, rounded down, at least 1). An item whose worker dies is given to another
    worker, ``max_attempts`` times at most, so an item that kills every worker it touches ends the run
    instead of looping. ``start_timeout`` bounds the wait for the first worker (a cluster that can never
    place one, or a model that takes longer to load, is then reported instead of waited on forever).
    """

    address: str = LOCAL
    workers: int = 0
    worker_cpus: float = 1.0
    worker_gpus: float = 0.0
    threads: int = 0
    max_attempts: int = 3
    start_timeout: float = 1800.0

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise ConfigError("--ray needs an address: local, auto or a cluster address such as 10.0.0.1:6379")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"--workers must be an integer >= 0 (0: as many as the cluster fits), got {self.workers}")
        for flag, value, low in (("--worker-cpus", self.worker_cpus, 0.0), ("--worker-gpus", self.worker_gpus, -1e-12)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= low:
                bound = "> 0" if flag == "--worker-cpus" else ">= 0"
                raise ConfigError(f"{flag} must be a number {bound}, got {value!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"--threads must be >= 0 (0: --worker-cpus), got {self.threads}")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.start_timeout <= 0:
            raise ConfigError(f"start_timeout must be > 0 seconds, got {self.start_timeout}")

    @property
    def worker_threads(self) -> int:
        """Torch threads in each worker: ``threads``, or the CPUs the worker reserved."""
        return self.threads or max(1, int(self.worker_cpus))

    def check_device(self, device: str) -> None:
        """A worker loads on a GPU exactly when it reserves one: anything else would fail or idle a GPU."""
        on_gpu = not str(device).startswith("cpu")
        if on_gpu and self.worker_gpus <= 0:
            raise ConfigError(f"--device {device} needs a GPU in every worker: pass --worker-gpus 1 (or --device cpu)")
        if not on_gpu and self.worker_gpus > 0:
            raise ConfigError(
                f"--worker-gpus {self.worker_gpus:g} reserves a GPU per worker but --device is {device}: "
                "pass --device cuda (or --worker-gpus 0)"
            )

    def to_dict(self) -> dict[str, Any]:
        """What a result folder records about the run (informational: scores never depend on it)."""
        return asdict(self)


def ray_options(
    address: str | None, workers: int = 0, worker_cpus: float = 1.0, worker_gpus: float = 0.0, threads: int = 0
) -> RayOptions | None:
    """The ``--ray`` command-line flags as options, or None for a run in this process. Worker flags given
    without ``--ray`` are refused rather than silently ignored."""
    if address is None:
        if workers or worker_cpus != 1.0 or worker_gpus:
            raise ConfigError("--workers, --worker-cpus and --worker-gpus only apply with --ray ADDRESS")
        return None
    return RayOptions(address, workers=workers, worker_cpus=worker_cpus, worker_gpus=worker_gpus, threads=threads)


# The typer options of the ``--ray`` flags, shared by every command that can spread its work over Ray workers.


def ray_address_option(what: str) -> Any:
    """``--ray ADDRESS`` for a command whose workers answer ``what`` (``"items"``, ``"subjects"``)."""
    import typer

    return typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help=f"answer the {what} on a Ray cluster: local (started here), auto (the one this machine joined) "
        "or a cluster address; needs the ray extra (docs/scale-out.md)",
    )


def workers_option() -> Any:
    """``--workers``."""
    import typer

    return typer.Option(0, help="with --ray: model-holding workers (0: as many as the cluster fits)")


def worker_cpus_option() -> Any:
    """``--worker-cpus``."""
    import typer

    return typer.Option(1.0, help="with --ray: CPUs each worker reserves")


def worker_gpus_option(note: str = "") -> Any:
    """``--worker-gpus``; ``note`` ends its help (e.g. what a GPU changes for the command)."""
    import typer

    return typer.Option(0.0, help=f"with --ray: GPUs each worker reserves{note}")
