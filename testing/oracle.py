"""What the simulator answers, computed without asking it (its replies are deterministic)."""

from __future__ import annotations

import uuid

from llm_simulator.text import SimulatedReply, simulated_reply

# What the gateway sends to the simulator for a chat started with only a prompt and
# max_tokens (common.settings: the simulator's model name, temperature 0.7).
GATEWAY_MODEL = "simulator"
GATEWAY_TEMPERATURE = 0.7


def unique_prompt(text: str = "Tell me about durable execution") -> str:
    """A prompt no other test uses, so simulator counters can be read per prompt."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def expected_answer(
    prompt: str,
    max_tokens: int,
    temperature: float = GATEWAY_TEMPERATURE,
    model: str = GATEWAY_MODEL,
    history: list[dict[str, str]] | None = None,
    variant: str = "",
) -> str:
    """The simulator's answer for this request, computed without asking it."""
    reply = expected_reply(prompt, max_tokens, temperature, model, history, variant)
    return "".join(reply.tokens)


def chat_messages(
    prompt: str,
    instructions: str | None = None,
    history: list[dict[str, str]] | None = None,
) -> list[dict[str, str]]:
    """The chat messages the simulator generates from: the instructions first (as a
    system message), the earlier turns, the prompt."""
    system = [] if instructions is None else [{"role": "system", "content": instructions}]
    return [*system, *(history or []), {"role": "user", "content": prompt}]


def expected_reply(
    prompt: str,
    max_tokens: int,
    temperature: float = GATEWAY_TEMPERATURE,
    model: str = GATEWAY_MODEL,
    history: list[dict[str, str]] | None = None,
    variant: str = "",
    instructions: str | None = None,
) -> SimulatedReply:
    """The simulator's reply for this request (tokens, finish reason, natural length);
    `variant`: as answered under `POST /sim/variant`."""
    messages = chat_messages(prompt, instructions, history)
    return simulated_reply(messages, model, max_tokens, temperature, variant)


def prompt_with_natural_length(
    label: str,
    model: str,
    *,
    at_least: int = 0,
    at_most: int = 10_000,
    temperature: float = 1.0,
    instructions: str | None = None,
) -> tuple[str, SimulatedReply]:
    """A unique prompt whose natural reply (sent straight to the simulator with `model`
    and `temperature`) has between `at_least` and `at_most` tokens."""
    for _ in range(20_000):
        prompt = unique_prompt(label)
        reply = expected_reply(prompt, 10_000, temperature, model, instructions=instructions)
        if at_least <= reply.natural_tokens <= at_most:
            return prompt, reply
    raise AssertionError(f"no prompt with a natural length in [{at_least}, {at_most}]")


def prompt_ending(
    finish_reason: str, max_tokens: int, text: str = "Tell me about it", *, unique: bool = True
) -> str:
    """A prompt whose simulated answer (gateway defaults) ends with `finish_reason`
    ("stop": shorter than `max_tokens`; "length": cut at it): `text` with a random suffix
    no other test uses, or with `unique=False` the first numbered suffix (`text (vN)`)
    that does, the same in every run (chaos runs are reproducible from their seed)."""
    for n in range(10_000):
        prompt = unique_prompt(text) if unique else f"{text} (v{n})"
        if expected_reply(prompt, max_tokens).finish_reason == finish_reason:
            return prompt
    raise AssertionError(f"no prompt found that ends with {finish_reason} at {max_tokens}")
