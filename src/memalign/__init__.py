"""memalign: episodic memory (EM-LLM) and personality alignment (PAS) for Hugging Face decoder LLMs."""

from memalign.errors import MemalignError
from memalign.models import ArchSpec, get_arch_spec, load_model

__version__ = "0.1.0"

__all__ = ["ArchSpec", "MemalignError", "__version__", "get_arch_spec", "load_model"]
