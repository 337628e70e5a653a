"""Load benchmark of `memalign serve` on loopback: throughput, time to first token, memory vs resending history.

Starts the server itself (a subprocess on 127.0.0.1), then

1. for 1, 4 and 16 concurrent streaming clients: aggregate generated tokens/s and p50/p95 time to first
   token over ``--requests`` requests per level;
2. a multi-turn conversation of ``--turns`` turns twice: with ``conversation_id`` (memory: each turn feeds
   its new tokens) and resending the whole history statelessly; per turn the prompt tokens fed and the
   latency.

Bounded in count (``--requests``, ``--turns``) and time (``--budget-s`` per part). Prints one JSON object.
Example: ``python benchmarks/serve_load.py --model tiny:qwen3 --memory small``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: argparse.Namespace, state: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "memalign",
        "serve",
        "--model",
        args.model,
        "--served-name",
        "bench",
        "--port",
        str(port),
        "--state",
        str(state),
        "--max-batch",
        "16",
        "--dtype",
        args.dtype,
        "--device",
        args.device,
    ]
    if args.memory:
        command += ["--memory", args.memory]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MEMALIGN_PROGRESS": "0"}
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server exited while starting")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start in 10 minutes")


def _stream_one(client: openai.OpenAI, prompt: str, max_tokens: int) -> tuple[float, int, float]:
    """(time to first token, tokens generated, total seconds) of one streamed request."""
    start = time.perf_counter()
    first = None
    stream = client.chat.completions.create(
        model="bench",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    tokens = 0
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    total = time.perf_counter() - start
    return (first if first is not None else total), tokens, total


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def concurrency(client: openai.OpenAI, args: argparse.Namespace) -> list[dict]:
    rows = []
    for clients in (1, 4, 16):
        n = max(clients, args.requests)
        prompts = [f"Tell me about item {i}." for i in range(n)]
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(lambda p: _stream_one(client, p, args.max_tokens), prompts))
        wall = time.perf_counter() - start
        ttft = [r[0] for r in results]
        rows.append(
            {
                "clients": clients,
                "requests": n,
                "tokens_per_s": sum(r[1] for r in results) / wall,
                "ttft_p50_s": statistics.median(ttft),
                "ttft_p95_s": _percentile(ttft, 0.95),
                "wall_s": wall,
            }
        )
        if wall > args.budget_s:
            break
    return rows


def conversation(client: openai.OpenAI, args: argparse.Namespace) -> dict:
    out: dict[str, list[dict]] = {"memory": [], "resend": []}
    history: list[dict[str, str]] = []
    start = time.perf_counter()
    for turn in range(args.turns):
        question = f"Turn {turn}: here is a fact, number {turn * 7}. Acknowledge it."
        t0 = time.perf_counter()
        mem = client.chat.completions.create(
            model="bench",
            messages=[{"role": "user", "content": question}],
            max_tokens=args.max_tokens,
            temperature=0,
            extra_body={"conversation_id": f"bench-{os.getpid()}"},
        )
        t1 = time.perf_counter()
        history.append({"role": "user", "content": question})
        full = client.chat.completions.create(
            model="bench", messages=history, max_tokens=args.max_tokens, temperature=0
        )
        t2 = time.perf_counter()
        history.append({"role": "assistant", "content": full.choices[0].message.content or ""})
        out["memory"].append({"turn": turn, "prompt_tokens": mem.usage.prompt_tokens, "latency_s": t1 - t0})
        out["resend"].append({"turn": turn, "prompt_tokens": full.usage.prompt_tokens, "latency_s": t2 - t1})
        if time.perf_counter() - start > args.budget_s:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny:qwen3")
    parser.add_argument("--memory", default=None, help="EM preset or YAML passed to --memory")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--budget-s", type=float, default=120.0, help="stop a part once it ran this long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        process, url = _start(args, Path(state))
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
            report = {
                "model": args.model,
                "memory": args.memory,
                "max_tokens": args.max_tokens,
                "concurrency": concurrency(client, args),
                "conversation": conversation(client, args),
            }
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
