"""Scale-out: bench sweeps and persona evaluations on a Ray cluster (``--ray ADDRESS``).

Items (bench) and subjects (persona) become tasks for worker actors that each load the model once; the
driver writes their results into the same resumable folders as a local run, in the same order. Ray is an
optional extra (``pip install 'memalign[ray]'``) imported only when a run asks for it. The drivers live in
:mod:`memalign.scaleout.bench` and :mod:`memalign.scaleout.persona` (imported by the runners on demand).
See docs/scale-out.md.
"""

from memalign.scaleout.cluster import INSTALL_HINT, connect, import_ray, worker_count
from memalign.scaleout.options import RayOptions, ray_options
from memalign.scaleout.ordered import InOrder, in_order
from memalign.scaleout.pool import ModelWorker, WorkerPool

__all__ = [
    "INSTALL_HINT",
    "InOrder",
    "ModelWorker",
    "RayOptions",
    "WorkerPool",
    "connect",
    "import_ray",
    "in_order",
    "ray_options",
    "worker_count",
]
