"""Texts that describe a person to the model from their training answers, as PAlign writes them.

Two modes prompt the model with who the person is: ``few-shot`` puts the person's raw answers in the
system prompt (:func:`profile_text`), and ``personality_prompt`` either reads a "You are ..." description
from a file or asks the model to write one from the same answers (:data:`PERSONA_REWRITE_PROMPT` +
:func:`answers_fragment`, PAlign's P² recipe). Both read the training items only.
"""

from __future__ import annotations

from collections.abc import Sequence

from memalign.errors import ConfigError
from memalign.persona.instruments import Instrument
from memalign.persona.prompts import PromptConfig
from memalign.persona.subjects import SubjectAnswers

FEW_SHOT_PREFIX = "Here are some of your behaviors and your level of recognition towards them;"
# The instruction PAlign's data_preprocess/get_personality_prompt.py sends to a Llama endpoint.
PERSONA_REWRITE_PROMPT = (
    'Please use "You" to organize and rewrite the following fragment into a smooth object '
    'description, without including any "accurate" and "inaccurate" elements, but rather a '
    "natural description:\n"
)


def answers_fragment(
    person: SubjectAnswers, instrument: Instrument, item_ids: Sequence[int], config: PromptConfig | None = None
) -> str:
    """``item text:option label`` of every answered item, ``;``-separated, in the person's *raw* direction.

    Missing answers are left out (PAlign wrote "Unknown", which tells the model nothing about the person).
    """
    labels = {o.value: o.label for o in (config or PromptConfig()).options}
    return ";".join(
        f"{instrument.item(i).text}:{labels[raw]}" for i in item_ids if (raw := person.raw_answer(i)) is not None
    )


def profile_text(
    person: SubjectAnswers, instrument: Instrument, item_ids: Sequence[int], config: PromptConfig | None = None
) -> str:
    """PAlign's few-shot profile, with the person's *raw* answers ("Cheat to get ahead.:Very Inaccurate").

    The separator is PAlign's PAS one (``;``). A person without any answer on ``item_ids`` is refused:
    the profile would be the bare prefix and the mode would silently equal ``NO_CHANGE``.
    """
    fragment = answers_fragment(person, instrument, item_ids, config)
    if not fragment:
        raise ConfigError(f"subject {person.subject_id} has no training answers to build a profile from")
    return FEW_SHOT_PREFIX + fragment
