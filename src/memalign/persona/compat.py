"""The name docs/persona.md uses for :mod:`memalign.persona.palign_compat` (PAlign's API): same objects."""

from memalign.persona.palign_compat import PASLM, get_model, head_out_name

__all__ = ["PASLM", "get_model", "head_out_name"]
