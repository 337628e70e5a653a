"""Load benchmark of `memalign serve` on loopback: throughput, time to first token, memory vs resending history.

Starts the server itself (a subprocess on 127.0.0.1, ``--threads`` torch threads) and runs the parts named by
``--parts`` (all but ``profile`` by default):

``concurrency``
    for 1, 4 and 16 concurrent streaming clients: aggregate generated tokens/s (wall clock, and per second
    of the server's CPU time, which a shared machine disturbs less) and p50/p95 time to first token over
    ``--requests`` requests per level.
``conversation``
    a ``--turns``-turn conversation with memory (``conversation_id``: each turn feeds only its new tokens,
    ``--turn-words`` words of text plus the answer) and, at the turns in ``--checkpoints``, the same
    history resent whole to a stateless server (``--baseline transformers``: ``transformers serve`` on the
    same weights; ``memalign``: this server without ``conversation_id``). A stateless server's latency at
    turn k depends only on the history up to k, so sampling turns measures the same curve for less time.
``restart``
    after the conversation, ``kill -9`` of the server, a restart on the same ``--state``, the number of
    turns it finds again, and one more turn (which must feed only its own tokens).
``recall``
    a multi-session recall check in the spirit of LoCoMo / LongMemEval: ``--facts`` facts stated in the
    first turns, filler turns up to ``--recall-tokens`` tokens in all, then one question per fact; with
    memory vs the history truncated to its last ``--truncate-tokens`` tokens, sent statelessly.
``profile`` (not in the default)
    no server: the engine in-process with 1 and 16 rows, its scheduler thread under cProfile: milliseconds
    per decode step, and how many of them go to the linear layers and to memory attention.

Bounded in count (``--requests``, ``--turns``, ``--recall-tokens``) and time (``--budget-s`` per part).
Writes one JSON object (stdout, and ``--out`` when given). Example:
``python benchmarks/serve_load.py --model smollm2-135m-instruct --memory small --threads 2 --parts concurrency``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pstats
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from memalign.serving.process import ServerProcess

SERVED = "bench"
DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "haystack" / "paul_graham"
FACTS = [
    ("locker number at the gym", "4817"),
    ("sister's flight number", "7362"),
    ("bike lock code", "2958"),
    ("apartment door code", "6041"),
    ("library card PIN", "3175"),
    ("parking spot number", "8529"),
    ("old phone extension", "1693"),
    ("storage unit number", "5284"),
]


class Server(ServerProcess):
    """One server subprocess on a free loopback port, its log in ``log_dir``; a real model may take minutes."""

    def __init__(self, command: list[str], threads: int, log_dir: Path, name: str) -> None:
        log = log_dir / f"{name}-{time.monotonic_ns()}.log"
        super().__init__(command, log, threads=threads, start_timeout_s=900)

    def client(self, api_key: str = "none", timeout: float = 1800) -> openai.OpenAI:
        return super().client(api_key, timeout)


def memalign_server(args: argparse.Namespace, state: Path, log_dir: Path) -> Server:
    command = [sys.executable, "-m", "memalign", "serve", "--model", args.model, "--served-name", SERVED]
    command += ["--port", "{port}", "--max-batch", "16", "--dtype", args.dtype]
    if not args.no_state:
        command += ["--state", str(state)]
    command += ["--device", args.device, "--threads", str(args.threads), "--max-tokens-limit", "4096"]
    command += ["--max-prompt-tokens", str(max(32768, 2 * args.recall_tokens))]
    if args.memory:
        command += ["--memory", args.memory]
    return Server(command, args.threads, log_dir, "memalign")


def transformers_server(args: argparse.Namespace, log_dir: Path) -> Server:
    """``transformers serve`` on the same weights: the preset's converted folder, or ``--model`` as given."""
    source = args.model
    if not args.model.startswith("tiny:"):
        from memalign.models.loading import resolve_source

        source, _ = resolve_source(args.model)
    dtype = {"auto": "auto", "bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}.get(args.dtype, args.dtype)
    command = [str(Path(sys.executable).with_name("transformers")), "serve", source, "--port", "{port}"]
    command += ["--host", "127.0.0.1", "--device", args.device, "--dtype", dtype]
    server = Server(command, args.threads, log_dir, "transformers")
    server.model = source
    return server


# ---- text ------------------------------------------------------------------------------------------------
def _corpus(args: argparse.Namespace) -> list[str]:
    """Sentences of natural text (``--text-dir`` essays), or generated ones when the folder is absent."""
    folder = Path(args.text_dir)
    if folder.is_dir():
        text = " ".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.txt")))
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)) if len(s) > 20]
        if sentences:
            return sentences
    rng = random.Random(0)
    words = ["garden", "river", "window", "market", "letter", "engine", "harbor", "winter", "lamp", "bridge"]
    pick = rng.choice
    return [f"The {pick(words)} by the {pick(words)} is {rng.randint(2, 99)} steps away." for _ in range(5000)]


class Text:
    """Consecutive passages of about ``words`` words from the corpus, never repeating until it runs out."""

    def __init__(self, sentences: list[str]) -> None:
        self.sentences, self.at = sentences, 0

    def take(self, words: int) -> str:
        out: list[str] = []
        count = 0
        while count < words:
            sentence = self.sentences[self.at % len(self.sentences)]
            self.at += 1
            out.append(sentence)
            count += len(sentence.split())
        return " ".join(out)


# ---- parts -----------------------------------------------------------------------------------------------
def _stream(client: openai.OpenAI, model: str, messages: list[dict], max_tokens: int, **extra: Any) -> dict:
    """Time to first token, total latency, token counts and text of one streamed greedy request."""
    start = time.perf_counter()
    first = None
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        **({"extra_body": extra} if extra else {}),
    )
    parts: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - start
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    total = time.perf_counter() - start
    return {
        "ttft_s": first if first is not None else total,
        "latency_s": total,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "text": "".join(parts),
    }


def warm_up(server: Server, model: str = SERVED) -> None:
    """One short request first, so the first measured one does not pay for lazy loading and kernel selection."""
    _stream(server.client(), model, [{"role": "user", "content": "Say hello."}], 4)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def concurrency(server: Server, args: argparse.Namespace) -> list[dict]:
    client = server.client()
    rows = []
    for clients in (1, 4, 16):
        n = max(clients, args.requests)
        prompts = [[{"role": "user", "content": f"Tell me a short story about item number {i}."}] for i in range(n)]
        cpu0, start = server.cpu_s(), time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(lambda m: _stream(client, SERVED, m, args.max_tokens), prompts))
        wall, cpu1 = time.perf_counter() - start, server.cpu_s()
        tokens = sum(r["completion_tokens"] or 0 for r in results)
        ttft = [r["ttft_s"] for r in results]
        cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        rows.append(
            {
                "clients": clients,
                "requests": n,
                "tokens": tokens,
                "wall_s": round(wall, 2),
                "server_cpu_s": None if cpu is None else round(cpu, 2),
                "tokens_per_s": round(tokens / wall, 2),
                "tokens_per_cpu_s": None if not cpu else round(tokens / cpu, 2),
                "ttft_p50_s": round(statistics.median(ttft), 3),
                "ttft_p95_s": round(_percentile(ttft, 0.95), 3),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if wall > args.budget_s:
            break
    base = rows[0]
    for row in rows:
        row["speedup_wall"] = round(row["tokens_per_s"] / base["tokens_per_s"], 2)
        if row["tokens_per_cpu_s"] and base["tokens_per_cpu_s"]:
            row["speedup_cpu"] = round(row["tokens_per_cpu_s"] / base["tokens_per_cpu_s"], 2)
    return rows


def _round(row: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items() if k != "text"}


def conversation(server: Server, baseline: Server | None, args: argparse.Namespace, cid: str) -> dict:
    """Turns with memory; the whole history resent to ``baseline`` at the checkpoint turns."""
    client = server.client()
    text = Text(_corpus(args))
    checkpoints = {int(t) for t in args.checkpoints.split(",") if t}
    history: list[dict[str, str]] = []
    memory_rows, resend_rows = [], []
    held_tokens = 0  # what the history holds before each turn: the tokens every earlier turn fed and generated
    if baseline is not None and baseline is not server:
        warm_up(baseline, getattr(baseline, "model", SERVED))
    start = time.perf_counter()
    for turn in range(1, args.turns + 1):
        question = f"Note {turn}. {text.take(args.turn_words)} Summarise note {turn} in one sentence."
        history.append({"role": "user", "content": question})
        cpu0 = server.cpu_s()
        row = _stream(client, SERVED, [history[-1]], args.answer_tokens, conversation_id=cid)
        cpu = None if cpu0 is None else server.cpu_s() - cpu0
        history.append({"role": "assistant", "content": row["text"]})
        memory_rows.append(_round({"turn": turn, "history_tokens": held_tokens, "server_cpu_s": cpu, **row}))
        held_tokens += row["prompt_tokens"] + row["completion_tokens"]
        print(json.dumps(memory_rows[-1]), file=sys.stderr, flush=True)
        if baseline is not None and turn in checkpoints:
            target = baseline.client()
            model = getattr(baseline, "model", SERVED)
            held = memory_rows[-1]["history_tokens"]
            try:
                again = _stream(target, model, history[:-1], args.answer_tokens)
            except openai.OpenAIError as exc:  # e.g. a history past the model's positions: recorded, not fatal
                again = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            resend_rows.append(_round({"turn": turn, "history_tokens": held, **again}))
            print(json.dumps({"resend": resend_rows[-1]}), file=sys.stderr, flush=True)
        if time.perf_counter() - start > args.budget_s:
            break
    held = httpx.get(f"{server.url}/v1/conversations/{cid}", timeout=60).json()
    return {
        "memory": memory_rows,
        "resend": resend_rows,
        "tokens_held": held["tokens_held"],
        "turns": held["turns"],
        "summary": _conversation_summary(memory_rows, resend_rows),
    }


def _conversation_summary(memory: list[dict], resend: list[dict]) -> dict:
    """Turn 5 vs the last turn (single turns and the median of 5 turns around each), memory and resend."""

    def around(rows: list[dict], turn: int, key: str) -> float | None:
        values = [r[key] for r in rows if abs(r["turn"] - turn) <= 2 and r.get(key) is not None]
        return statistics.median(values) if values else None

    if not memory:
        return {}
    last = memory[-1]["turn"]
    out: dict[str, Any] = {"last_turn": last}
    for key in ("latency_s", "ttft_s", "server_cpu_s"):
        early, late = around(memory, 5, key), around(memory, last - 2, key)
        out[f"memory_{key}_turn5_median5"] = early
        out[f"memory_{key}_last_median5"] = late
        out[f"memory_{key}_ratio_median5"] = None if not early or late is None else round(late / early, 2)
    per_token = [r["latency_s"] / max(1, r["completion_tokens"] or 1) for r in memory]
    out["memory_s_per_generated_token_first5"] = round(statistics.median(per_token[:5]), 4)
    out["memory_s_per_generated_token_last5"] = round(statistics.median(per_token[-5:]), 4)
    if resend:
        out["resend_latency_s"] = {r["turn"]: r.get("latency_s") for r in resend}
        out["resend_history_tokens"] = {r["turn"]: r["history_tokens"] for r in resend}
    return out


def restart(server: Server, args: argparse.Namespace, state: Path, log_dir: Path, cid: str) -> tuple[Server, dict]:
    """Kill -9 after the conversation, restart on the same state, count the turns found, add one turn."""
    before = httpx.get(f"{server.url}/v1/conversations/{cid}", timeout=60).json()
    server.kill()
    again = memalign_server(args, state, log_dir)
    found = httpx.get(f"{again.url}/v1/conversations/{cid}", timeout=60).json()
    message = [{"role": "user", "content": "One more note: the restart is over. Acknowledge it in one sentence."}]
    turn = _stream(again.client(), SERVED, message, args.answer_tokens, conversation_id=cid)
    after = httpx.get(f"{again.url}/v1/conversations/{cid}", timeout=60).json()
    return again, {
        "turns_before_kill": before["turns"],
        "turns_after_restart": found["turns"],
        "messages_equal": found["messages"] == before["messages"],
        "restart_s": round(again.start_s, 2),
        "next_turn_prompt_tokens": turn["prompt_tokens"],
        "next_turn_latency_s": round(turn["latency_s"], 3),
        "turns_after_next": after["turns"],
    }


def recall(server: Server, args: argparse.Namespace, cid: str) -> dict:
    """Facts in the first turns, filler up to ``--recall-tokens``, questions at the end: memory vs truncation."""
    client = server.client()
    text = Text(_corpus(args))
    facts = FACTS[: args.facts]
    turns: list[tuple[dict, str, int]] = []  # (message, answer, tokens the two took)
    total = 0
    start = time.perf_counter()

    def say(content: str) -> None:
        nonlocal total
        message = {"role": "user", "content": content}
        row = _stream(client, SERVED, [message], 8, conversation_id=cid)
        turns.append((message, row["text"], row["prompt_tokens"] + row["completion_tokens"]))
        total += turns[-1][2]
        progress = {"recall_turn": len(turns), "tokens": total, "s": round(row["latency_s"], 2)}
        print(json.dumps(progress), file=sys.stderr, flush=True)

    for i, (what, value) in enumerate(facts, start=1):
        say(f"Session {i}. {text.take(args.recall_words // 4)} By the way, my {what} is {value}. Just say OK.")
    session = len(facts)
    while total < args.recall_tokens:
        session += 1
        say(f"Session {session}. {text.take(args.recall_words)} Just say OK.")
    fed_s = time.perf_counter() - start
    # the truncated history: the last messages that fit in --truncate-tokens
    kept, budget = [], args.truncate_tokens
    for message, answer, tokens in reversed(turns):
        if tokens > budget:
            break
        kept[:0] = [message, {"role": "assistant", "content": answer}]
        budget -= tokens
    rows = []
    for what, value in facts:
        question = {"role": "user", "content": f"What is my {what}? Answer with the number only."}
        mem = _stream(client, SERVED, [question], 12, conversation_id=cid)
        cut = _stream(client, SERVED, kept + [question], 12)
        rows.append(
            {
                "fact": what,
                "value": value,
                "memory_answer": mem["text"],
                "memory_correct": value in mem["text"],
                "truncated_answer": cut["text"],
                "truncated_correct": value in cut["text"],
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "tokens_in_conversation": total,
        "turns": len(turns),
        "truncated_history_tokens": args.truncate_tokens - budget,
        "feed_s": round(fed_s, 1),
        "memory_recall": round(sum(r["memory_correct"] for r in rows) / len(rows), 3),
        "truncated_recall": round(sum(r["truncated_correct"] for r in rows) / len(rows), 3),
        "questions": rows,
    }


def _cumulative(stats: pstats.Stats, name: str) -> float:
    """Seconds spent inside the functions whose profile label contains ``name`` (cumulative)."""
    return sum(row[3] for (_, _, label), row in stats.stats.items() if name in label)


def _ms_per_step(full: pstats.Stats, prefill: pstats.Stats, steps: int, name: str) -> float:
    """Milliseconds per decode step inside ``name``: the run with decode steps minus its prefills alone."""
    return round(1000 * (_cumulative(full, name) - _cumulative(prefill, name)) / max(1, steps), 1)


def _profiled_run(engine_args: tuple, memory: str | None, prompts: list[str], max_tokens: int) -> tuple:
    """(profile of the scheduler thread, decode steps) for ``prompts`` answered together by a fresh engine."""
    import cProfile
    import threading

    from memalign.serving import Engine, GenerationRequest, SamplingParams

    profiler = cProfile.Profile()

    def start_profiler(*_: Any) -> None:
        sys.setprofile(None)  # the scheduler thread's first event: from here cProfile profiles that thread
        profiler.enable()

    threading.setprofile(start_profiler)
    try:
        engine = Engine(*engine_args, memory=memory).start()
    finally:
        threading.setprofile(None)
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0)
    with engine:
        jobs = [engine.submit(GenerationRequest([{"role": "user", "content": p}], sampling)) for p in prompts]
        for job in jobs:
            job.result()
    return pstats.Stats(profiler), engine.steps


def profile(args: argparse.Namespace) -> list[dict]:
    """Where a decode step's time goes with 1 and 16 rows: the engine in-process, its thread under cProfile.

    Each batch runs twice, with ``--max-tokens`` and with 1 token (its prefills alone); the difference,
    divided by the decode steps, is one step: in all, in the linear layers (batched over the rows) and in
    memory attention (run sequence by sequence inside each layer). cProfile adds its own cost to every
    Python call, so the many small calls of memory attention weigh a little more than without it."""
    import torch

    from memalign import load_model
    from memalign.serving import Engine, GenerationRequest, SamplingParams

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    with Engine(model, tokenizer, memory=args.memory) as engine:  # warm-up, not profiled
        engine.generate(GenerationRequest([{"role": "user", "content": "Say hello."}], SamplingParams(max_tokens=4)))
    rows = []
    for batch in (1, 16):
        prompts = [f"Tell me a short story about item number {i}." for i in range(batch)]
        full, steps = _profiled_run((model, tokenizer), args.memory, prompts, args.max_tokens)
        prefill, _ = _profiled_run((model, tokenizer), args.memory, prompts, 1)

        rows.append(
            {
                "rows": batch,
                "decode_steps": steps,
                "prefill_s": round(_cumulative(prefill, "_prefill"), 3),
                "ms_per_decode_step": round(1000 * _cumulative(full, "_decode_step") / max(1, steps), 1),
                "ms_linear_per_step": _ms_per_step(full, prefill, steps, "torch._C._nn.linear"),
                "ms_memory_attention_per_step": _ms_per_step(full, prefill, steps, "memory_attention"),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _emit(report: dict, out: str | None) -> None:
    text = json.dumps(report, indent=1)
    if out:
        Path(out).write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny:qwen3")
    parser.add_argument("--memory", default=None, help="EM preset or YAML passed to --memory")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    parser.add_argument(
        "--parts", default="concurrency,conversation,restart,recall", help="also: profile (in-process, no server)"
    )
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32, help="answer length in the concurrency part")
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--turn-words", type=int, default=200, help="words of text in each turn's message")
    parser.add_argument("--answer-tokens", type=int, default=48, help="answer length in the conversation")
    parser.add_argument("--checkpoints", default="5,20,50", help="turns resent to the baseline")
    parser.add_argument("--baseline", choices=["transformers", "memalign", "none"], default="transformers")
    parser.add_argument("--facts", type=int, default=5)
    parser.add_argument("--recall-tokens", type=int, default=8000, help="tokens in the recall conversation")
    parser.add_argument("--recall-words", type=int, default=1200, help="words in each filler turn")
    parser.add_argument("--truncate-tokens", type=int, default=2048, help="history kept by the truncated baseline")
    parser.add_argument("--text-dir", default=str(DEFAULT_TEXT), help="folder of .txt files for the turns' text")
    parser.add_argument("--budget-s", type=float, default=1200.0, help="stop a part once it ran this long")
    parser.add_argument(
        "--no-state", action="store_true", help="serve without --state: conversations in RAM, no snapshot per turn"
    )
    parser.add_argument("--log-dir", default=None, help="where the servers' logs go (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="also write the JSON report to this file")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {
        "model": args.model,
        "memory": args.memory,
        "dtype": args.dtype,
        "threads": args.threads,
        "args": vars(args),
    }
    if "profile" in parts:
        report["profile"] = profile(args)
        parts.discard("profile")
        if not parts:
            _emit(report, args.out)
            return
    cid = f"bench-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        state, log_dir = Path(tmp) / "state", Path(args.log_dir or tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        server = memalign_server(args, state, log_dir)
        report["server_start_s"] = round(server.start_s, 2)
        warm_up(server)
        baseline: Server | None = None
        try:
            if "concurrency" in parts:
                report["concurrency"] = concurrency(server, args)
            if "conversation" in parts:
                if args.baseline == "transformers":
                    baseline = transformers_server(args, log_dir)
                elif args.baseline == "memalign":
                    baseline = server
                report["baseline"] = args.baseline
                report["conversation"] = conversation(server, baseline, args, cid)
                if baseline is not None and baseline is not server:
                    baseline.stop()
                    baseline = None
                if "restart" in parts and not args.no_state:
                    server, report["restart"] = restart(server, args, state, log_dir, cid)
            if "recall" in parts:
                report["recall"] = recall(server, args, f"{cid}-recall")
        finally:
            server.stop()
            if baseline is not None and baseline is not server:
                baseline.stop()
    _emit(report, args.out)


if __name__ == "__main__":
    main()
