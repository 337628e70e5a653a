"""``--ray ADDRESS`` on a two-node cluster on one machine: a head and a second ``ray start --address`` node
on loopback, one CPU each, so the two workers must run on different nodes; both answer items, and the
folders equal a local run's.

The driver runs in its own Python process (as a user's would): a process that already held a Ray
connection (the local cluster of ``test_scaleout.py``) cannot reliably connect to another cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_scaleout import BUDGET, same_bench_folders

from memalign.bench.runner import run_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RAY = Path(sys.executable).with_name("ray")
# a throw-away cluster on loopback: no token to share between its nodes and the driver
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0", "MEMALIGN_PROGRESS": "0"}
SWEEP = ["passkey"], [400], ["full", "streaming"], "tiny:llama"

DRIVER = """
import logging, sys, time
from pathlib import Path

import ray

from memalign.bench.methods import Budget
from memalign.bench.runner import sweep_configs
from memalign.scaleout import RayOptions
from memalign.scaleout.bench import BenchWorker, run_sweep_on_ray

address, out, loaded = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ray.init(address=address, logging_level="WARNING")
deadline = time.monotonic() + 60
while ray.cluster_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)


class BothNodesWorker(BenchWorker):
    # no item is answered before two workers have loaded the model, so one worker cannot do them all
    def load(self):
        super().load()
        (loaded / str(__import__("os").getpid())).touch()

    def predict(self, item):
        deadline = time.monotonic() + 120
        while len(list(loaded.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        return super().predict(item)


logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
logging.getLogger("memalign.scaleout").setLevel(logging.INFO)
budget = Budget(n_init=16, n_local=128, n_mem=128, chunk_size=64)
configs, _ = sweep_configs(*SWEEP, out, samples=6, dtype="fp32", budget=budget)
run_sweep_on_ray(configs, out, RayOptions(address, workers=2), worker_class=BothNodesWorker)
print("alive nodes:", sum(node["Alive"] for node in ray.nodes()))
""".replace("*SWEEP", ", ".join(repr(part) for part in SWEEP))


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_node(args: list[str], log: Path) -> subprocess.Popen:
    """``ray start --block`` in its own process group, so the test ends exactly the processes it started."""
    agent, grpc, runtime, metrics = free_ports(4)
    command = [str(RAY), "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", *args]
    command += ["--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(grpc)]
    command += ["--runtime-env-agent-port", str(runtime), "--metrics-export-port", str(metrics)]
    with log.open("w") as fh:
        return subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=ENV)


def stop_node(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # ray start --block then stops the node's processes
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever of that group is left


def wait_for(log: Path, text: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            pytest.fail(f"the Ray node did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    pytest.importorskip("ray")
    if not RAY.is_file():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    logs = tmp_path_factory.mktemp("ray-logs")
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    nodes = [start_node(["--head", "--port", str(port), "--include-dashboard", "false"], logs / "head.log")]
    try:
        wait_for(logs / "head.log", "Ray runtime started", nodes[0])
        nodes.append(start_node(["--address", address], logs / "worker.log"))
        wait_for(logs / "worker.log", "Ray runtime started", nodes[1])
        yield address
    finally:
        for node in reversed(nodes):
            stop_node(node)
        # `ray stop` would remove the head's address note; without it a later ray.init() joins a dead cluster
        note = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if note.is_file() and note.read_text().strip().endswith(f":{port}"):
            note.unlink()


def test_a_two_node_cluster_runs_items_on_both_nodes(two_nodes, tmp_path):
    local, remote, loaded = tmp_path / "local", tmp_path / "ray", tmp_path / "loaded"
    loaded.mkdir()
    run_sweep(*SWEEP, local, samples=6, dtype="fp32", budget=BUDGET)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.run(
        [sys.executable, str(script), two_nodes, str(remote), str(loaded)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-3000:]
    same_bench_folders(local, remote)
    # the driver's closing line per worker: "worker N (node <id> <ip>, pid P): K items in ..."
    lines = [line for line in driver.stdout.splitlines() if " items in " in line]
    busy_nodes = {line.split("(node ")[1].split()[0] for line in lines if not line.split("): ")[1].startswith("0 ")}
    assert len(lines) == 2 and len(busy_nodes) == 2, driver.stdout
    assert "alive nodes: 2" in driver.stdout
