"""Joining (or starting) the Ray cluster a run uses, and sizing its workers to the cluster's resources.

``import ray`` happens here and only when a run asks for Ray: the extra stays optional.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from memalign.errors import ConfigError, MissingExtraError
from memalign.scaleout.options import LOCAL, RayOptions

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'memalign[ray]' (or pip install ray)"
# A local cluster moves items and rows (kilobytes) and one tokenizer: a small object store is plenty, and
# Ray's default (30% of RAM) would reserve shared memory that the models need.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


def import_ray() -> ModuleType:
    """The ``ray`` module, or a :class:`MissingExtraError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@contextmanager
def connect(options: RayOptions) -> Iterator[ModuleType]:
    """Yield ``ray`` connected to the cluster of ``options.address``; disconnect on exit.

    A process already connected (a notebook or test that called ``ray.init`` itself) keeps its connection
    and its cluster: this neither re-initialises nor shuts it down.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if options.address == LOCAL:
        cpus = options.workers * options.worker_cpus if options.workers else os.cpu_count() or 1
        # address "local": always a new cluster, even where `ray start` left one this process would join
        kwargs = {
            "address": LOCAL,
            "num_cpus": max(1, math.ceil(cpus)),
            "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
        }
        logger.info("starting a local Ray cluster with %d CPUs", kwargs["num_cpus"])
    else:
        kwargs = {"address": options.address}
    try:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, **kwargs)
    except ConnectionError as exc:
        raise ConfigError(
            f"--ray {options.address}: no Ray cluster answers there ({str(exc).splitlines()[0]}); start one "
            "with `ray start --head` (see docs/scale-out.md), or pass --ray local"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"--ray {options.address}: {str(exc).splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def worker_count(ray: ModuleType, options: RayOptions, n_items: int) -> int:
    """How many workers to start: ``options.workers`` or as many as the cluster's resources fit, never more
    than there are items. A worker the cluster can never place is refused now, not waited on forever."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    if options.worker_cpus > cpus:
        raise ConfigError(
            f"--worker-cpus {options.worker_cpus:g}: the Ray cluster has {cpus:g} CPUs in all, so no worker "
            "could ever start; ask for fewer or add nodes"
        )
    if options.worker_gpus > gpus:
        raise ConfigError(
            f"--worker-gpus {options.worker_gpus:g}: the Ray cluster has {gpus:g} GPUs in all, so no worker "
            "could ever start; pass --worker-gpus 0 or add GPU nodes"
        )
    fit = int(cpus // options.worker_cpus)
    if options.worker_gpus > 0:
        fit = min(fit, int(gpus // options.worker_gpus))
    wanted = options.workers or fit
    if wanted > fit:
        logger.warning(
            "%d workers asked, the cluster's resources fit %d now: the others start when resources free up",
            wanted,
            fit,
        )
    return max(1, min(wanted, n_items))
