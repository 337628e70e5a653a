"""Episodic memory (EM-LLM) for Hugging Face decoder LLMs: ``with EpisodicMemory(model, cfg) as mem: ...``."""

from memalign.memory.cache import EMCache
from memalign.memory.config import EMConfig, em_presets
from memalign.memory.episodic import ATTN_IMPLEMENTATION, EpisodicMemory

__all__ = ["ATTN_IMPLEMENTATION", "EMCache", "EMConfig", "EpisodicMemory", "em_presets"]
