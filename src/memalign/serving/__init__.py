"""``memalign serve`` as a library: an engine with per-row personas and per-conversation episodic memory.

``Engine`` runs without HTTP; ``create_app`` puts OpenAI's chat-completion API in front of it (needs the
``serve`` extra: fastapi, uvicorn, openai). See docs/serving.md.
"""

from memalign.serving.engine import Completion, Engine, EngineLimits, Generation, GenerationRequest
from memalign.serving.personas import load_personas
from memalign.serving.sampling import SamplingParams

__all__ = ["Completion", "Engine", "EngineLimits", "Generation", "GenerationRequest", "SamplingParams", "load_personas"]
