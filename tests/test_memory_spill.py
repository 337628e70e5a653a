"""Spill directories of the disk tier: named after their process, removed on SIGTERM/SIGINT (real
subprocesses), chained to the previous signal handlers, and cleaned up by the next store after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from memalign.memory import EMConfig, EpisodicMemory, spill
from memalign.memory.store import EventStore
from memalign.memory.store_config import StoreConfig
from memalign.testing import tiny_model

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

HKV, D, PAGE = 2, 8, 16
PAGE_BYTES = PAGE * 2 * HKV * D * 4  # fp32


def disk_store(folder: Path) -> EventStore:
    config = StoreConfig(host_budget_bytes=4 * PAGE_BYTES, offload_dir=folder, page_tokens=PAGE)
    return EventStore(HKV, D, 4 * D, torch.float32, torch.device("cpu"), config)


def fill(store: EventStore, events: int = 10) -> None:
    for i in range(events):
        store.add(torch.randn(HKV, PAGE, D), torch.randn(HKV, PAGE, D), torch.randn(4 * D), i * PAGE)


def spill_dirs(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{spill.PREFIX}*"))


STORE_CHILD = textwrap.dedent("""
    import sys, time, torch
    from memalign.memory.store import EventStore
    from memalign.memory.store_config import StoreConfig
    config = StoreConfig(host_budget_bytes=4 * {page_bytes}, offload_dir=sys.argv[1], page_tokens={page})
    store = EventStore({hkv}, {d}, 4 * {d}, torch.float32, torch.device("cpu"), config)
    for i in range(10):
        store.add(torch.randn({hkv}, {page}, {d}), torch.randn({hkv}, {page}, {d}), torch.randn(4 * {d}), i * {page})
    assert store.archive.directory is not None
    print(store.archive.directory, flush=True)
    time.sleep(120)
""").format(page_bytes=PAGE_BYTES, page=PAGE, hkv=HKV, d=D)


MEMORY_CHILD = textwrap.dedent("""
    import sys, time, torch
    from memalign.memory import EMConfig, EpisodicMemory
    from memalign.memory.store_config import StoreConfig
    from memalign.testing import tiny_model
    torch.set_num_threads(1)
    model = tiny_model("qwen3")
    store = StoreConfig(host_budget_bytes=2 * 2 * 16 * 2 * 2 * 32 * 4, offload_dir=sys.argv[1], page_tokens=16)
    cfg = EMConfig(n_init=4, n_local=32, n_mem=32, chunk_size=16, min_block_size=2, max_block_size=8, store=store)
    mem = EpisodicMemory(model, cfg).attach()
    try:
        mem.generate(torch.randint(3, 500, (1, 400)), max_new_tokens=2, cache=mem.new_cache())
        print("ready", flush=True)
        time.sleep(120)
    except KeyboardInterrupt:
        print(f"interrupted attached={mem.attached} attn={model.config._attn_implementation}", flush=True)
""")


class Child:
    """A Python subprocess running ``code`` with a folder argument; its first stdout line says it is ready."""

    def __init__(self, code: str, folder: Path) -> None:
        self.folder = folder
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def ready(self) -> str:
        line = self.process.stdout.readline().strip()
        if not line:
            self.process.kill()
            pytest.fail(f"child did not start: {self.process.stderr.read()}")
        return line


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Every subprocess starts at once: each spends most of its time importing torch and transformers."""
    kinds = {"sigterm": STORE_CHILD, "sigkill": STORE_CHILD, "sigint": MEMORY_CHILD}
    started = {name: Child(code, tmp_path_factory.mktemp(name)) for name, code in kinds.items()}
    yield started
    for child in started.values():
        child.process.kill()
        child.process.wait()


def test_spill_directory_carries_the_owning_pid(tmp_path):
    with disk_store(tmp_path) as store:
        fill(store)
        directory = store.archive.directory
        assert directory is not None and directory.name.startswith(spill.spill_prefix())
        assert spill.owner_pid(directory.name) == os.getpid()
    assert spill_dirs(tmp_path) == []


def test_sigterm_removes_the_spill_directories_of_a_real_process(children):
    child = children["sigterm"]
    directory = Path(child.ready())
    assert directory.is_dir() and spill.owner_pid(directory.name) == child.process.pid
    child.process.send_signal(signal.SIGTERM)
    assert child.process.wait(timeout=60) == -signal.SIGTERM  # still ends by the signal (handler chained)
    assert spill_dirs(child.folder) == []


def test_kill_9_leftovers_are_removed_by_the_next_store_but_live_ones_stay(children):
    child = children["sigkill"]
    tmp_path = child.folder
    directory = child.ready()
    child.process.send_signal(signal.SIGKILL)
    child.process.wait(timeout=60)
    assert Path(directory).is_dir(), "SIGKILL runs no handler: the directory is left"
    live = tmp_path / f"{spill.PREFIX}1-{spill.spill_prefix().split('-')[3]}-live"  # pid 1 always exists
    other_host = tmp_path / f"{spill.PREFIX}{child.process.pid}-00000000-elsewhere"
    unrelated = tmp_path / "memalign-kv-legacy"
    for folder in (live, other_host, unrelated):
        folder.mkdir()
    store = disk_store(tmp_path)  # a new disk-tier store sweeps its folder
    try:
        assert not Path(directory).exists()
        assert live.is_dir() and other_host.is_dir() and unrelated.is_dir()
    finally:
        store.close()


def test_sigint_detaches_memory_and_removes_its_spill_directories(children):
    child = children["sigint"]
    assert child.ready() == "ready" and spill_dirs(child.folder)
    child.process.send_signal(signal.SIGINT)
    out, err = child.process.communicate(timeout=60)
    assert "interrupted attached=False attn=sdpa" in out, err  # detached, then KeyboardInterrupt as before
    assert spill_dirs(child.folder) == []


def test_handlers_installed_while_a_disk_tier_is_attached_chained_and_restored(tmp_path):
    received: list[int] = []

    def previous(signum, frame):
        received.append(signum)

    original = signal.signal(signal.SIGTERM, previous)
    try:
        model = tiny_model("qwen3")
        plain = EMConfig(n_init=4, n_local=32, n_mem=32, chunk_size=16, min_block_size=2, max_block_size=8)
        with EpisodicMemory(model, plain):
            assert signal.getsignal(signal.SIGTERM) is previous, "no disk tier, no handler"
        disk = plain.replace(store=StoreConfig(host_budget_bytes=2 * 2 * 8192, offload_dir=tmp_path, page_tokens=PAGE))
        with EpisodicMemory(model, disk) as mem:
            assert spill.handlers_installed()
        assert signal.getsignal(signal.SIGTERM) is previous, "detach puts the previous handler back"

        mem = EpisodicMemory(model, disk).attach()
        mem.generate(torch.randint(3, 500, (1, 400)), max_new_tokens=2, cache=mem.new_cache())
        assert spill_dirs(tmp_path)
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM], "the previous handler still runs"
        assert not mem.attached and model.config._attn_implementation == "sdpa"
        assert spill_dirs(tmp_path) == []
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, original)


def test_a_bare_disk_store_installs_handlers_only_while_its_directory_lives(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    store = disk_store(tmp_path)
    assert not spill.handlers_installed(), "nothing on disk yet"
    fill(store)
    assert spill.handlers_installed()
    store.close()
    assert not spill.handlers_installed() and signal.getsignal(signal.SIGTERM) is before
