"""``--ray``: bench items and persona subjects on a local Ray cluster give the files a local run gives.

One 2-CPU cluster serves the whole module (starting Ray costs seconds); tiny models and the persona
predictor modes keep each run short. The two-node cluster is in ``test_scaleout_nodes.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import shared_data
from typer.testing import CliRunner

from memalign.bench.methods import Budget
from memalign.bench.runner import run_sweep, sweep_configs
from memalign.cli import app
from memalign.errors import ConfigError, MissingExtraError, WorkerError
from memalign.scaleout import InOrder, RayOptions, in_order, ray_options, worker_count

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMINGS = {"seconds", "cpu_seconds"}
BUDGET = Budget(n_init=16, n_local=128, n_mem=128, chunk_size=64)
SWEEP = {"samples": 4, "dtype": "fp32", "budget": BUDGET}


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    os.environ["RAY_DEDUP_LOGS"] = "0"
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, logging_level="WARNING"
    )
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's worker classes travel by value
    yield ray
    ray.shutdown()


def rows(path: Path) -> list[dict]:
    """The prediction or record lines of a file, timings left out (they differ between any two runs)."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in path.read_text().splitlines()]


def same_bench_folders(local: Path, remote: Path) -> list[str]:
    names = sorted(p.name for p in local.iterdir() if p.is_dir())
    assert names == sorted(p.name for p in remote.iterdir() if p.is_dir())
    for name in names:
        assert rows(local / name / "predictions.jsonl") == rows(remote / name / "predictions.jsonl"), name
        assert (local / name / "config.yaml").read_text() == (remote / name / "config.yaml").read_text()
        metrics = [json.loads((root / name / "metrics.json").read_text()) for root in (local, remote)]
        timing = {"seconds", "prompt_tokens_per_second", "mean_cpu_seconds"}
        assert [{k: v for k, v in m.items() if k not in timing} for m in metrics[:1]] == [
            {k: v for k, v in m.items() if k not in timing} for m in metrics[1:]
        ]
    return names


# ---- no cluster needed --------------------------------------------------------------------------------
def test_in_order_holds_early_results_and_refuses_repeats():
    buffer = InOrder()
    assert buffer.add(2, "c") == [] and buffer.add(1, "b") == [] and buffer.waiting == 2
    assert buffer.add(0, "a") == ["a", "b", "c"] and buffer.waiting == 0
    with pytest.raises(ValueError, match="twice"):
        buffer.add(1, "again")
    assert list(in_order([(1, "y"), (0, "x"), (2, "z")])) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="without every earlier one"):
        list(in_order([(1, "y")]))


def test_ray_flags_are_checked_and_ray_stays_optional(tmp_path, monkeypatch):
    assert ray_options(None) is None
    with pytest.raises(ConfigError, match="only apply with --ray"):
        ray_options(None, workers=2)
    with pytest.raises(ConfigError, match="--worker-cpus"):
        RayOptions("local", worker_cpus=0)
    with pytest.raises(ConfigError, match="--workers"):
        RayOptions("local", workers=-1)
    with pytest.raises(ConfigError, match="--worker-gpus 1"):
        RayOptions("local").check_device("cuda")
    with pytest.raises(ConfigError, match="--device cuda"):
        RayOptions("local", worker_gpus=1).check_device("cpu")
    assert RayOptions("auto", worker_cpus=2.5).worker_threads == 2
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    configs = sweep_configs(["passkey"], [400], ["full"], "tiny:llama", tmp_path, **SWEEP)
    with pytest.raises(MissingExtraError, match=r"pip install 'memalign\[ray\]'"):
        run_sweep(["passkey"], [400], ["full"], "tiny:llama", tmp_path, **SWEEP, ray=RayOptions("local"))
    assert configs and not any(tmp_path.iterdir())  # refused before anything was written
    result = CliRunner().invoke(
        app, ["bench", "run", "-t", "passkey", "--lengths", "400", "--model", "tiny:llama", "--ray", "local"]
    )
    assert result.exit_code != 0 and "pip install 'memalign[ray]'" in str(result.exception)


# ---- on the module's cluster --------------------------------------------------------------------------
def test_bench_on_ray_writes_what_a_local_run_writes_and_resumes(cluster, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_sweep(["passkey"], [400], ["full", "em-llm"], "tiny:llama", local, **SWEEP)
    small = ["--n-init", "16", "--n-local", "128", "--n-mem", "128", "--chunk-size", "64"]
    args = ["bench", "run", "-t", "passkey", "--lengths", "400", "-m", "full,em-llm", "--model", "tiny:llama"]
    args += [*small, "--dtype", "fp32", "--out", str(remote), "--ray", "local", "--workers", "2"]
    first = CliRunner().invoke(app, [*args, "--samples", "3"])
    assert first.exit_code == 0, first.output
    # a driver killed while writing leaves a cut-off last line: the resume drops it and redoes that item
    folder = next(p for p in remote.iterdir() if "__full__" in p.name)
    text = (folder / "predictions.jsonl").read_text()
    (folder / "predictions.jsonl").write_text(text[: len(text) - 40])
    second = CliRunner().invoke(app, [*args, "--samples", "4"])
    assert second.exit_code == 0, second.output
    names = same_bench_folders(local, remote)
    assert len(names) == 2
    for name in names:  # every item exactly once, in the local order
        ids = [r["id"] for r in rows(remote / name / "predictions.jsonl")]
        assert len(ids) == 4 and len(set(ids)) == 4


class KillOnce:
    """Mixed into a worker: the first worker to reach item ``victim`` kills its own process mid-item."""

    marker: Path
    victim: str

    def predict(self, item):
        if item.record.id == self.victim and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().predict(item)


def test_a_worker_killed_mid_item_loses_and_repeats_nothing(cluster, tmp_path):
    from memalign.bench.runner import sweep_cells
    from memalign.scaleout.bench import BenchWorker, run_sweep_on_ray
    from memalign.testing import tiny_tokenizer

    local, remote = tmp_path / "local", tmp_path / "ray"
    run_sweep(["passkey"], [400], ["full"], "tiny:llama", local, **{**SWEEP, "samples": 6})
    configs, _ = sweep_configs(["passkey"], [400], ["full"], "tiny:llama", remote, **{**SWEEP, "samples": 6})
    victim = next(sweep_cells(configs, tiny_tokenizer()))[1][2].id
    worker = type("KillingWorker", (KillOnce, BenchWorker), {"marker": tmp_path / "killed", "victim": victim})
    run_sweep_on_ray(configs, remote, RayOptions("local", workers=2), worker_class=worker)
    assert (tmp_path / "killed").is_file()  # a worker really died on that item
    same_bench_folders(local, remote)


class AlwaysKill:
    """Mixed into a worker: every worker that reaches item ``victim`` dies on it (an item too big for a worker)."""

    victim: str

    def predict(self, item):
        if item.record.id == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().predict(item)


def test_an_item_that_kills_every_worker_ends_the_run_after_max_attempts(cluster, tmp_path):
    from memalign.scaleout.bench import BenchWorker, run_sweep_on_ray

    configs, _ = sweep_configs(["passkey"], [400], ["full"], "tiny:llama", tmp_path, **{**SWEEP, "samples": 2})
    from memalign.bench.runner import sweep_cells
    from memalign.testing import tiny_tokenizer

    first, victim = (r.id for r in next(sweep_cells(configs, tiny_tokenizer()))[1])
    worker = type("FatalItemWorker", (AlwaysKill, BenchWorker), {"victim": victim})
    with pytest.raises(WorkerError, match=f"item {victim} of .*: its worker died 2 times"):
        run_sweep_on_ray(configs, tmp_path, RayOptions("local", workers=1, max_attempts=2), worker_class=worker)
    (folder,) = tmp_path.iterdir()
    assert [r["id"] for r in rows(folder / "predictions.jsonl")] == [first]  # the answered item is kept, once


def test_a_worker_that_cannot_load_the_model_stops_the_run_with_its_error(cluster, tmp_path):
    with pytest.raises(WorkerError, match="could not load the model: UnknownNameError: unknown tiny model kind"):
        run_sweep(["passkey"], [400], ["full"], "tiny:nosuch", tmp_path, **SWEEP, ray=RayOptions("local"))
    with pytest.raises(ConfigError, match="has 0 GPUs"):  # a worker no node can host is refused, not awaited
        worker_count(cluster, RayOptions("local", worker_gpus=1), 4)


def test_persona_predictors_on_ray_write_what_a_local_run_writes(cluster, tmp_path):
    data = shared_data("papi")
    base = ["persona", "eval", "--modes", "predictors", "--data", str(data), "--recoded", "--limit", "12"]
    local = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    remote = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "ray"), "--ray", "local", "--workers", "2"])
    assert remote.exit_code == 0, remote.output
    files = sorted(p.name for p in (tmp_path / "local" / "records").iterdir())
    assert len(files) == 4 and files == sorted(p.name for p in (tmp_path / "ray" / "records").iterdir())
    for name in files:
        expected = rows(tmp_path / "local" / "records" / name)
        assert rows(tmp_path / "ray" / "records" / name) == expected and len(expected) == 12
    configs = [json.loads((tmp_path / d / "config.json").read_text()) for d in ("local", "ray")]
    assert configs[1]["run"]["ray"]["workers"] == 2  # how it ran is recorded (and never compared)
    assert [{k: v for k, v in c.items() if k != "run"} for c in configs[:1]] == [
        {k: v for k, v in c.items() if k != "run"} for c in configs[1:]
    ]
    # the Ray run's folder resumes locally (and the other way round): same configuration
    more = CliRunner().invoke(app, [*base[:-1], "14", "--out", str(tmp_path / "ray")])
    assert more.exit_code == 0, more.output
    assert len(rows(tmp_path / "ray" / "records" / "ridge.jsonl")) == 14
    assert json.loads((tmp_path / "ray" / "config.json").read_text())["run"]["limit"] == 14
