"""OpenAI-compatible LLM simulator for durable-chat.

A twin of OpenAI's Chat Completions API (streaming or not) and Responses API (streaming,
background mode with ``queued`` -> ``in_progress`` -> final, resume by ``sequence_number``,
cancel) over HTTP, so the real ``openai`` client can be exercised without a provider key.
Replies are deterministic pseudo-English with a natural end (:func:`simulated_reply`): they
finish with ``stop`` / ``completed`` when they end on their own and ``length`` / ``incomplete``
when cut at the request's limit. ``/sim/*`` endpoints let tests inject faults (refusals,
provider failures, content filtering, stuck queues, cut, stalled or erroring connections; see
:class:`FaultKind`) and prove how many generations were started and completed and how many
tokens were billed.
"""

from llm_simulator.app import create_app
from llm_simulator.settings import FaultKind, SimulatorSettings
from llm_simulator.text import (
    MARKER,
    NATURAL_MAX_TOKENS,
    NATURAL_MIN_TOKENS,
    SimulatedReply,
    count_tokens,
    simulated_reply,
    simulated_tokens,
)

__all__ = [
    "MARKER",
    "NATURAL_MAX_TOKENS",
    "NATURAL_MIN_TOKENS",
    "FaultKind",
    "SimulatedReply",
    "SimulatorSettings",
    "count_tokens",
    "create_app",
    "simulated_reply",
    "simulated_tokens",
]
