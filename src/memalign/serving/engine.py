"""The serving engine: one scheduler thread owns the model and runs every request, without HTTP.

Every request runs on episodic memory (an :class:`~memalign.memory.EMCache` of its own): a fresh one for a
stateless request, the conversation's for a request with a ``conversation_id``. Inside the local window
memory attention equals full attention, so a stateless request shorter than ``n_local`` gets the plain
model's answer; longer ones get EM-LLM's.

Scheduling (continuous batching): between two decode steps the scheduler admits waiting requests (up
to ``max_batch`` in flight) and prefills each on its own cache; then one decode step feeds the last token
of *every* active row in one forward pass. The rows of that pass are the sequences of different caches
gathered into one cache (memory attention runs per sequence anyway), so requests join and leave between
steps, each with its own memory, persona (per-row steering), sampling settings and stop condition.
A prefill is not split across decode steps: a long prompt delays the other rows' next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memalign.chat_format import Message, chat_input_ids
from memalign.errors import MemalignError, PermissionDeniedError, RequestError
from memalign.memory.cache import EMCache
from memalign.memory.config import EMConfig
from memalign.memory.episodic import EpisodicMemory
from memalign.memory.validate import MAX_TOKENS, check_int
from memalign.models.logits import final_logit_softcap, soft_cap
from memalign.persona.row_steering import RowSteering
from memalign.persona.steering import Steering
from memalign.serving.conversations import Conversation, ConversationStore, owner_tag
from memalign.serving.sampling import SamplingParams, StopText, TokenSampler

logger = logging.getLogger(__name__)

__all__ = ["Completion", "Engine", "EngineLimits", "Generation", "GenerationRequest"]

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class EngineLimits:
    """Bounds on what one request may ask for; beyond them a request is refused with a message."""

    max_batch: int = 16  # requests in flight at once (continuous batching)
    # What one request may ask for:
    max_new_tokens: int = 4096
    max_prompt_tokens: int = 32768
    max_messages: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_new_tokens", "max_prompt_tokens", "max_messages"):
            check_int("EngineLimits", name, getattr(self, name), 1, MAX_TOKENS)


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion. ``api_key`` identifies the owner of the conversation (None: no keys in use)."""

    messages: Sequence[Message]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    persona: str | None = None
    conversation_id: str | None = None
    api_key: str | None = None


@dataclass(frozen=True)
class Completion:
    """The outcome of a request. ``prompt_tokens`` counts the tokens fed for it (for a conversation only the
    new ones: the history is already in memory)."""

    id: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    created: int
    persona: str | None = None
    conversation_id: str | None = None


class _Channel:
    """Events from the scheduler thread to the consumer, delivered into its asyncio loop when it has one."""

    def __init__(self) -> None:
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._async: asyncio.Queue | None = asyncio.Queue() if self._loop is not None else None
        self._sync: queue.Queue = queue.Queue()

    def put(self, item: tuple[str, Any]) -> None:
        if self._loop is None:
            self._sync.put(item)
            return
        # RuntimeError: the consumer's loop has closed, nobody is listening any more
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._async.put_nowait, item)

    def get(self) -> tuple[str, Any]:
        if self._loop is not None:
            raise MemalignError("this generation was submitted from an event loop; consume it with `async for`")
        return self._sync.get()

    async def aget(self) -> tuple[str, Any]:
        if self._async is None:
            raise MemalignError("this generation was submitted outside an event loop; iterate it with `for`")
        return await self._async.get()


class Generation:
    """A submitted request: iterate it for text deltas (``for`` or ``async for``), then read ``completion``.

    A failure inside the engine is raised from the iteration as the :class:`MemalignError` it was.
    """

    def __init__(self, request: GenerationRequest) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.request = request
        self.completion: Completion | None = None
        self.cancelled = threading.Event()
        self.conversation: Conversation | None = None  # set by the engine when the request continues one
        self.new_messages: list[Message] = []  # the messages the conversation has not seen
        self._channel = _Channel()

    def cancel(self) -> None:
        """Stop a stateless request early. A conversation's turn still completes (and is saved), so its
        memory never holds half a turn; its client may fetch it later."""
        self.cancelled.set()

    def _emit(self, kind: str, value: Any) -> None:
        self._channel.put((kind, value))

    def _handle(self, kind: str, value: Any) -> str | None:
        if kind == "delta":
            return value
        if kind == "done":
            self.completion = value
            return None
        raise value

    def __iter__(self) -> Iterator[str]:
        while self.completion is None:
            kind, value = self._channel.get()
            text = self._handle(kind, value)
            if text:
                yield text

    async def __aiter__(self) -> AsyncIterator[str]:
        while self.completion is None:
            kind, value = await self._channel.aget()
            text = self._handle(kind, value)
            if text:
                yield text

    async def first_event(self) -> str | None:
        """Wait for the first delta (None when the answer is empty); raises what the engine raised.

        Lets a server answer a request that fails at its prefill with a proper error status before it
        starts a stream."""
        kind, value = await self._channel.aget()
        return self._handle(kind, value)

    def result(self) -> Completion:
        for _ in self:
            pass
        return self.completion

    async def aresult(self) -> Completion:
        async for _ in self:
            pass
        return self.completion


@dataclass
class _Row:
    """A request being answered: its cache, sampler and what it generated so far."""

    job: Generation
    cache: EMCache
    sampler: TokenSampler
    stop: StopText
    persona: str | None
    conv: Conversation | None = None
    new_messages: list[Message] = field(default_factory=list)
    prompt_tokens: int = 0
    generated: list[int] = field(default_factory=list)


class Engine:
    """Chat completions on one model with episodic memory, personas and conversations.

    ``with Engine(model, tokenizer, memory="small", personas={...}, state_dir="state") as engine:
    print(engine.generate(GenerationRequest(messages=[...])).text)``
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        memory: EMConfig | str | None = None,
        personas: Mapping[str, Steering] | None = None,
        state_dir: str | Path | None = None,
        model_name: str = "memalign",
        limits: EngineLimits | None = None,
        ram_budget_bytes: int = 2 << 30,
    ) -> None:
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.limits = limits or EngineLimits()
        self.memory = EpisodicMemory(model, memory)
        self.personas = RowSteering(dict(personas or {}))
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.ram_budget_bytes = ram_budget_bytes
        self.store: ConversationStore | None = None
        self._softcap = final_logit_softcap(model.config)
        self._eos = self._eos_ids()
        self._inbox: queue.Queue[Generation] = queue.Queue()
        self._active: list[_Row] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._steering_handle: Any = None
        self._lock = threading.Lock()  # steps counter and in-flight count, read by /health
        self.steps = 0

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        out = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            out.add(self.tokenizer.eos_token_id)
        return out

    # ---- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Engine:
        if self._thread is not None:
            return self
        self.memory.attach()
        try:
            self._steering_handle = self.personas.apply(self.model)
            self.store = ConversationStore(self.memory, self.state_dir, self.ram_budget_bytes)
        except BaseException:
            if self._steering_handle is not None:
                self._steering_handle.remove()
            self.memory.detach()
            raise
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="memalign-engine", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Finish nothing more: pending requests fail with a message; the model is restored."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        shutdown = MemalignError("the server is shutting down; retry on its next start")
        for row in self._active:
            self._fail(row, shutdown)
        self._active.clear()
        while not self._inbox.empty():
            self._inbox.get_nowait()._emit("error", shutdown)
        self.store.close()
        self._steering_handle.remove()
        self.memory.detach()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.running else "stopped",
            "model": self.model_name,
            "active": len(self._active),
            "waiting": self._inbox.qsize(),
            "decode_steps": self.steps,
            "conversations": len(self.store) if self.store is not None else 0,
            "personas": list(self.personas.names),
        }

    # ---- requests --------------------------------------------------------------------------------------
    def check_persona(self, persona: str | None, allowed: Sequence[str] | None = None) -> None:
        """Refuse an unknown persona, or one outside ``allowed`` (an API key's list; ``*`` for all)."""
        if persona is None:
            return
        if persona not in self.personas:
            known = ", ".join(self.personas.names) or "none (start the server with --personas DIR)"
            raise RequestError(f"unknown persona {persona!r}; known: {known}", "persona")
        if allowed is not None and "*" not in allowed and persona not in allowed:
            raise PermissionDeniedError(f"this API key may not use persona {persona!r}", "persona")

    def _check_messages(self, messages: Sequence[Message]) -> None:
        if not messages:
            raise RequestError("messages must hold at least one message", "messages")
        if len(messages) > self.limits.max_messages:
            raise RequestError(f"at most {self.limits.max_messages} messages per request", "messages")
        for i, message in enumerate(messages):
            if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                raise RequestError(
                    f"messages[{i}] needs a role ({', '.join(ROLES)}) and a string content", f"messages[{i}]"
                )

    def submit(self, request: GenerationRequest) -> Generation:
        """Queue a request; errors that need no model (limits, persona, conversation state) raise here."""
        if not self.running:
            raise MemalignError("the engine is not running; use `with Engine(...) as engine:`")
        self._check_messages(request.messages)
        self.check_persona(request.persona)
        if request.sampling.max_tokens > self.limits.max_new_tokens:
            raise RequestError(
                f"max_tokens {request.sampling.max_tokens} is above this server's limit of "
                f"{self.limits.max_new_tokens}",
                "max_tokens",
            )
        job = Generation(request)
        if request.conversation_id is not None:
            conv = self.store.open(request.conversation_id, owner_tag(request.api_key))
            try:
                job.new_messages = conv.new_messages(list(request.messages))
            except BaseException:
                self.store.release(conv)
                raise
            job.conversation = conv
        self._inbox.put(job)
        return job

    def generate(self, request: GenerationRequest) -> Completion:
        """Submit and wait (from a thread without an event loop)."""
        return self.submit(request).result()

    def conversation(self, conversation_id: str, api_key: str | None = None) -> dict[str, Any]:
        return self.store.get(conversation_id, owner_tag(api_key)).info()

    def delete_conversation(self, conversation_id: str, api_key: str | None = None) -> None:
        self.store.delete(conversation_id, owner_tag(api_key))

    # ---- scheduler -------------------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopping.is_set():
                self._admit()
                if self._active:
                    self._decode_step()

    def _admit(self) -> None:
        while len(self._active) < self.limits.max_batch:
            try:
                job = self._inbox.get(timeout=0.05) if not self._active else self._inbox.get_nowait()
            except queue.Empty:
                return
            try:
                self._prefill(job)
            except Exception as exc:  # a failed request never stops the scheduler
                self._fail_job(job, exc)

    def _prefill(self, job: Generation) -> None:
        request = job.request
        conv = job.conversation
        if conv is not None:
            cache = self.store.cache_of(conv)
            new = job.new_messages
            ids = conv.prompt_ids(self.tokenizer, new)
        else:
            cache, new = self.memory.new_cache(), []
            ids = chat_input_ids(self.tokenizer, list(request.messages))
        row = _Row(
            job,
            cache,
            TokenSampler(request.sampling),
            StopText(request.sampling.stop),
            request.persona,
            conv,
            new,
            prompt_tokens=len(ids),
        )
        if len(ids) > self.limits.max_prompt_tokens:
            self._fail(
                row,
                RequestError(
                    f"the prompt has {len(ids)} new tokens, above this server's limit of "
                    f"{self.limits.max_prompt_tokens}",
                    "messages",
                ),
            )
            return
        self.personas.select([request.persona])
        try:
            _, logits = self.memory.prefill(torch.tensor([ids], dtype=torch.long), cache=cache)
        except Exception as exc:
            self._fail(row, exc)
            return
        self._active.append(row)
        self._push(row, row.sampler(logits[0]))

    def _decode_step(self) -> None:
        rows = [r for r in self._active if not (r.job.cancelled.is_set() and r.conv is None)]
        for row in self._active:
            if row not in rows:
                self._drop(row)
        self._active = rows
        if not rows:
            return
        # One cache holding every row's sequence: the attention runs per sequence, the rest batched.
        merged = self.memory.new_cache()
        merged.sequences = [row.cache.sequences[0] for row in rows]
        merged.seq_length = max(row.cache.seq_length for row in rows)
        ids = torch.tensor(
            [[row.generated[-1]] for row in rows], dtype=torch.long, device=next(self.model.parameters()).device
        )
        self.personas.select([row.persona for row in rows])
        try:
            hidden = self.memory.spec.decoder(self.model)(
                input_ids=ids, past_key_values=merged, use_cache=True
            ).last_hidden_state[:, -1]
            logits = soft_cap(self.model.get_output_embeddings()(hidden).float(), self._softcap)
        except Exception as exc:
            for row in rows:
                self._fail(row, exc)
            self._active = []
            return
        with self._lock:
            self.steps += 1
        for i, row in enumerate(rows):
            row.cache.seq_length += 1
            self._push(row, row.sampler(logits[i]))

    def _push(self, row: _Row, token: int) -> None:
        """Record a sampled token; stream what is safe; finish the row on EOS, a stop string or max_tokens."""
        row.generated.append(token)
        if token in self._eos:
            self._finish(row, "stop")
            return
        text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        delta = row.stop.update(text)
        if delta:
            row.job._emit("delta", delta)
        if row.stop.stopped:
            self._finish(row, "stop")
        elif len(row.generated) >= row.job.request.sampling.max_tokens:
            self._finish(row, "length")

    def _finish(self, row: _Row, reason: str) -> None:
        if not row.stop.stopped:
            row.stop.update(self.tokenizer.decode(row.generated, skip_special_tokens=True))
        rest = row.stop.flush()
        text = row.stop.text
        if rest:
            row.job._emit("delta", rest)
        self._active = [r for r in self._active if r is not row]
        conv = row.conv
        if conv is not None:
            try:
                row.cache.unfed = torch.tensor([[row.generated[-1]]], dtype=torch.long)
                conv.messages = conv.messages + row.new_messages + [{"role": "assistant", "content": text}]
                last = row.generated[-1]
                conv.pending_close = conv.closing_text(
                    self.tokenizer, self.tokenizer.decode([last]) if last in self._eos else None
                )
                conv.turns += 1
                self.store.commit(conv)
            except Exception as exc:
                self._fail(row, exc)
                return
            self.store.release(conv)
        else:
            row.cache.close()
        req = row.job.request
        row.job._emit(
            "done",
            Completion(
                row.job.id,
                text,
                reason,
                row.prompt_tokens,
                len(row.generated),
                row.job.created,
                req.persona,
                req.conversation_id,
            ),
        )

    def _drop(self, row: _Row) -> None:
        row.cache.close()

    def _fail(self, row: _Row, exc: BaseException) -> None:
        """End a row with an error. A conversation goes back to its last saved turn (or is forgotten when
        nothing was saved), so its memory never keeps half a turn."""
        self._active = [r for r in self._active if r is not row]
        conv = row.conv
        if conv is not None:
            row.cache.close()
            conv.cache = None
            if self.store.root is None or conv.turns == 0:
                conv.turns, conv.messages = 0, []
            else:
                saved = self.store.saved_messages(conv.id)
                conv.messages, conv.turns = saved["messages"], saved["turns"]
            self.store.release(conv)
        else:
            row.cache.close()
        self._fail_job(row.job, exc, released=True)

    def _fail_job(self, job: Generation, exc: BaseException, released: bool = False) -> None:
        conv = job.conversation
        if conv is not None and not released:
            self.store.release(conv)
        if not isinstance(exc, MemalignError):
            logger.exception("request %s failed", job.id, exc_info=exc)
            exc = MemalignError(f"internal error while answering ({type(exc).__name__}); see the server log")
        job._emit("error", exc)
