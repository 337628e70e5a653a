"""Conversations bound to episodic memory: what each has seen, where its memory lives, who owns it.

A conversation holds one :class:`~memalign.memory.EMCache` (one sequence) with every token of its history.
Each request sends ``messages``; only those the conversation has not seen are rendered and fed, so a turn
costs its new tokens whatever the length of the history.

With a state directory, each completed turn is saved as a memory snapshot
(:mod:`memalign.memory.snapshot`, atomic) under ``<state>/conversations/<id>/`` with the messages and the
owner in its metadata; idle conversations beyond the RAM budget are paged out (their cache closed) and
loaded back on their next turn, and a restarted server finds them all again. Without a state directory
the conversations live in RAM only, and the least recently used idle ones are forgotten past the budget.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from memalign.chat_format import Message, chat_input_ids, render_chat
from memalign.errors import ConflictError, MemalignError, NotFoundError, RequestError
from memalign.memory.cache import EMCache
from memalign.memory.episodic import EpisodicMemory
from memalign.memory.snapshot import load_snapshot, read_manifest, save_snapshot
from memalign.text import common_prefix_length

logger = logging.getLogger(__name__)

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SENTINEL = "\x00memalign-answer\x00"


def owner_tag(api_key: str | None) -> str | None:
    """What is stored about a conversation's owner: a hash of its API key (never the key itself)."""
    return None if api_key is None else hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:32]


def check_conversation_id(conversation_id: str) -> str:
    if not isinstance(conversation_id, str) or not CONVERSATION_ID.match(conversation_id):
        raise RequestError(
            "conversation_id must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
            "conversation_id",
        )
    return conversation_id


@dataclass
class Conversation:
    """One conversation's history and memory. ``cache`` is None while it is paged out to the state directory."""

    id: str
    owner: str | None
    messages: list[Message] = field(default_factory=list)
    pending_close: str = ""  # template text closing the last answer, fed at the start of the next turn
    turns: int = 0
    tokens_held: int = 0
    cache: EMCache | None = None
    busy: bool = False
    nbytes: int = 0

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "turns": self.turns,
            "tokens_held": self.tokens_held,
            "messages": [dict(m) for m in self.messages],
            "in_memory": self.cache is not None,
        }

    def new_messages(self, messages: list[Message]) -> list[Message]:
        """The messages of a request this conversation has not seen.

        A request repeats the whole history (then what follows it is new) or sends only new messages; a
        request that starts like the history and then differs is refused, since memory cannot be edited.
        """
        seen = [_key(m) for m in self.messages]
        sent = [_key(m) for m in messages]
        agreed = common_prefix_length(sent, seen)
        if agreed == len(seen):
            new = list(messages[agreed:])
        elif agreed == 0:
            new = list(messages)
        else:
            raise ConflictError(
                f"messages differ from conversation {self.id!r} at message {agreed}: memory cannot "
                "be edited; send the whole history unchanged (or only the new messages), or start a "
                "new conversation",
                "messages",
            )
        if not new:
            raise RequestError(
                f"messages hold nothing conversation {self.id!r} has not seen; add a user message", "messages"
            )
        return new

    def prompt_ids(self, tokenizer: PreTrainedTokenizerBase, new: list[Message]) -> list[int]:
        """Token ids that bring memory from the history to ``new`` plus the assistant's generation prompt."""
        if not self.messages:
            return chat_input_ids(tokenizer, new)
        previous = render_chat(tokenizer, self.messages, add_generation_prompt=False)
        full = render_chat(tokenizer, self.messages + new, add_generation_prompt=True)
        text = self.pending_close + full[common_prefix_length(previous, full) :]
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def closing_text(self, tokenizer: PreTrainedTokenizerBase, answer_ends_with: str | None) -> str:
        """Template text after an assistant answer, minus the end-of-turn token the model generated itself."""
        rendered = render_chat(
            tokenizer, self.messages[:-1] + [{"role": "assistant", "content": _SENTINEL}], add_generation_prompt=False
        )
        closing = rendered.split(_SENTINEL, 1)[1] if _SENTINEL in rendered else "\n\n"
        if answer_ends_with and closing.startswith(answer_ends_with):
            closing = closing[len(answer_ends_with) :]
        return closing


def _key(message: Message) -> tuple[Any, Any]:
    return message.get("role"), message.get("content")


class ConversationStore:
    """Conversations by id: RAM up to ``ram_budget_bytes`` of memory, the rest paged out to ``state_dir``.

    Thread-safe: the server's request threads look conversations up while the engine's scheduler runs turns.
    """

    def __init__(
        self, memory: EpisodicMemory, state_dir: str | Path | None = None, ram_budget_bytes: int = 2 << 30
    ) -> None:
        self.memory = memory
        self.root = Path(state_dir) / "conversations" if state_dir is not None else None
        self.ram_budget_bytes = ram_budget_bytes
        self._lock = threading.RLock()
        self._items: OrderedDict[str, Conversation] = OrderedDict()  # least recently used first
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._discover()

    def _discover(self) -> None:
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not CONVERSATION_ID.match(folder.name):
                continue
            try:
                extra = read_manifest(folder)["extra"]
            except MemalignError as exc:
                logger.warning("ignoring conversation state %s: %s", folder, exc)
                continue
            self._items[folder.name] = Conversation(
                id=folder.name,
                owner=extra.get("owner"),
                messages=list(extra.get("messages", [])),
                pending_close=str(extra.get("pending_close", "")),
                turns=int(extra.get("turns", 0)),
                tokens_held=int(extra.get("tokens_held", 0)),
            )
        if self._items:
            logger.info("found %d saved conversation(s) in %s", len(self._items), self.root)

    # ---- lookup ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def get(self, conversation_id: str, owner: str | None) -> Conversation:
        """The conversation if it exists and belongs to ``owner``; a foreign one is reported as not found."""
        with self._lock:
            conv = self._items.get(check_conversation_id(conversation_id))
            if conv is None or conv.owner != owner:
                raise NotFoundError(f"no conversation {conversation_id!r} for this API key", "conversation_id")
            return conv

    def open(self, conversation_id: str, owner: str | None) -> Conversation:
        """The conversation, created empty when the id is new; marked busy until :meth:`release`."""
        with self._lock:
            check_conversation_id(conversation_id)
            conv = self._items.get(conversation_id)
            if conv is None:
                conv = self._items[conversation_id] = Conversation(conversation_id, owner)
            elif conv.owner != owner:
                raise NotFoundError(f"no conversation {conversation_id!r} for this API key", "conversation_id")
            if conv.busy:
                raise ConflictError(
                    f"conversation {conversation_id!r} is answering another request; wait for it", "conversation_id"
                )
            conv.busy = True
            self._items.move_to_end(conversation_id)
            return conv

    def release(self, conv: Conversation) -> None:
        with self._lock:
            conv.busy = False
            if conv.turns == 0 and conv.cache is None and self._items.get(conv.id) is conv:
                del self._items[conv.id]  # its first turn failed before anything was kept
        self._enforce_budget()

    def delete(self, conversation_id: str, owner: str | None) -> None:
        with self._lock:
            conv = self.get(conversation_id, owner)
            if conv.busy:
                raise ConflictError(
                    f"conversation {conversation_id!r} is answering a request; delete it after", "conversation_id"
                )
            del self._items[conv.id]
            if conv.cache is not None:
                conv.cache.close()
            if self.root is not None:
                shutil.rmtree(self.root / conv.id, ignore_errors=True)

    def saved_messages(self, conversation_id: str) -> dict[str, Any]:
        """``messages`` and ``turns`` of the conversation's last saved turn."""
        extra = read_manifest(self.root / conversation_id)["extra"]
        return {"messages": list(extra.get("messages", [])), "turns": int(extra.get("turns", 0))}

    # ---- memory ----------------------------------------------------------------------------------------
    def cache_of(self, conv: Conversation) -> EMCache:
        """The conversation's cache, loaded from its snapshot when paged out (call from the engine thread)."""
        if conv.cache is None:
            if conv.turns and self.root is not None:
                conv.cache, _ = load_snapshot(self.memory, self.root / conv.id)
            else:
                conv.cache = self.memory.new_cache()
        return conv.cache

    def commit(self, conv: Conversation) -> None:
        """Record a completed turn: update counters and write the snapshot (before the client hears of it)."""
        cache = conv.cache
        conv.tokens_held = cache.get_seq_length() + (0 if cache.unfed is None else cache.unfed.shape[1])
        conv.nbytes = sum(int(row["bytes"]) for row in cache.stats())
        if self.root is not None:
            extra = {
                "id": conv.id,
                "owner": conv.owner,
                "messages": conv.messages,
                "turns": conv.turns,
                "pending_close": conv.pending_close,
                "tokens_held": conv.tokens_held,
            }
            save_snapshot(cache, self.root / conv.id, extra=extra)

    def _enforce_budget(self) -> None:
        with self._lock:
            live = [c for c in self._items.values() if c.cache is not None]
            total = sum(c.nbytes for c in live)
            for conv in live:  # least recently used first
                if total <= self.ram_budget_bytes:
                    break
                if conv.busy:
                    continue
                total -= conv.nbytes
                conv.cache.close()
                conv.cache = None
                if self.root is None:
                    del self._items[conv.id]
                    logger.warning(
                        "conversation %s forgotten: RAM budget reached and no --state to page it out", conv.id
                    )
                else:
                    logger.info("conversation %s paged out to %s", conv.id, self.root / conv.id)

    def close(self) -> None:
        with self._lock:
            for conv in self._items.values():
                if conv.cache is not None:
                    conv.cache.close()
                    conv.cache = None
