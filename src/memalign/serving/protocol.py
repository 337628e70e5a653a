"""OpenAI's chat-completion wire format: the request body memalign accepts, responses, chunks and errors.

Responses and stream chunks are built with the ``openai`` package's own types (as transformers' server
does), so their shape is OpenAI's by construction. The request body is validated here: a field memalign
does not implement is refused by name rather than silently ignored, except a few that change nothing
(``user``, ``metadata``, ``store``).
"""

from __future__ import annotations

from typing import Any, Literal

from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.completion_usage import CompletionUsage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memalign.chat_format import Message
from memalign.errors import RequestError
from memalign.serving.engine import Completion
from memalign.serving.sampling import SamplingParams

__all__ = ["ChatCompletionBody", "chunk", "completion_response", "error_body", "parse_body"]


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class _MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart]
    name: str | None = None

    def to_message(self) -> Message:
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        # OpenAI's "developer" role is the system prompt of newer models; chat templates know "system".
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's fields memalign implements, plus ``persona`` and
    ``conversation_id`` (sent by the openai client as ``extra_body``)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[_MessageIn]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: Literal[1] = 1
    frequency_penalty: Literal[0] | None = None
    presence_penalty: Literal[0] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    persona: str | None = None
    conversation_id: str | None = None

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise RequestError("max_tokens and max_completion_tokens disagree; send one", "max_completion_tokens")
        max_tokens = self.max_completion_tokens or self.max_tokens or default_max_tokens
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=stop,
            seed=self.seed,
        )

    def chat_messages(self) -> list[Message]:
        return [m.to_message() for m in self.messages]


def parse_body(raw: bytes) -> ChatCompletionBody:
    """Validate a request body; any problem becomes one :class:`RequestError` naming the field."""
    try:
        return ChatCompletionBody.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise RequestError(f"the request body is not valid JSON: {first['msg']}") from None
        param = ".".join(str(p) for p in first["loc"]) or None
        message = "unsupported field" if first["type"] == "extra_forbidden" else first["msg"]
        if first["type"] == "missing":
            message = "required field missing"
        raise RequestError(f"{param}: {message}" if param else message, param) from None


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _usage(done: Completion) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )


def _extras(persona: str | None, conversation_id: str | None) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if persona is not None:
        extras["persona"] = persona
    if conversation_id is not None:
        extras["conversation_id"] = conversation_id
    return extras


def completion_response(done: Completion, model: str) -> dict[str, Any]:
    body = ChatCompletion(
        id=done.id,
        created=done.created,
        model=model,
        object="chat.completion",
        choices=[
            Choice(
                index=0,
                finish_reason=done.finish_reason,
                message=ChatCompletionMessage(role="assistant", content=done.text),
            )
        ],
        usage=_usage(done),
    ).model_dump(mode="json", exclude_none=True)
    return {**body, **_extras(done.persona, done.conversation_id)}


def chunk(
    gen_id: str,
    created: int,
    model: str,
    *,
    content: str | None = None,
    role: bool = False,
    finish_reason: str | None = None,
    usage: Completion | None = None,
) -> str:
    """One server-sent event of a streamed completion."""
    choices = (
        []
        if usage is not None
        else [
            ChunkChoice(
                index=0,
                finish_reason=finish_reason,
                delta=ChoiceDelta(role="assistant" if role else None, content=content),
            )
        ]
    )
    body = ChatCompletionChunk(
        id=gen_id,
        created=created,
        model=model,
        object="chat.completion.chunk",
        choices=choices,
        usage=_usage(usage) if usage is not None else None,
    )
    return f"data: {body.model_dump_json(exclude_none=True)}\n\n"
