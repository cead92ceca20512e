"""OpenAI-compatible LLM simulator for durable-chat.

Serves deterministic, paced chat completions and a Responses API subset (background mode,
resume by ``sequence_number``, cancel) over HTTP so the real ``openai`` client can be exercised
without a provider key, and exposes ``/sim/*`` endpoints that let tests inject faults and
prove how many generations were started and completed.
"""

from llm_simulator.app import create_app
from llm_simulator.settings import FaultKind, SimulatorSettings
from llm_simulator.text import MARKER, count_tokens, simulated_tokens

__all__ = [
    "MARKER",
    "FaultKind",
    "SimulatorSettings",
    "count_tokens",
    "create_app",
    "simulated_tokens",
]
