"""Markdown of the assistant's reply message, for every state a turn goes through.

Pure functions, no Chainlit: a reply is the answer so far (``LiveAnswer.text``: the
checkpointed chunks continued by the live preview), followed (after a blank line) by a
footer line of small badges: stage and progress while the workflow runs (with a note
when the LLM call restarted); duration, tokens, cost and a link to the workflow's
Temporal history once it ended (then the answer is the checkpointed text alone); and a
clear sentence for a stop, an error (pointing to the Retry button when asking again may
help) or an answer that ended early (cut at max_tokens, stopped by a content filter).
Nothing here ever shows a stack trace.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from ui.gateway_client import WorkflowStatus
from ui.live_answer import LiveAnswer

STARTING_TEXT = "Starting the answer…"
RETRY_HINT = "use **Retry** below to ask again."
RETRIED_BADGE = "asked again after a failure"


@dataclass(frozen=True, slots=True)
class TemporalLinks:
    """Builds links to a workflow's history in the Temporal UI."""

    base_url: str
    namespace: str

    def workflow_url(self, workflow_id: str) -> str:
        base = self.base_url.rstrip("/")
        return (
            f"{base}/namespaces/{quote(self.namespace, safe='')}"
            f"/workflows/{quote(workflow_id, safe='')}"
        )


def badge(text: str) -> str:
    """One small badge (inline code, so it renders as a compact grey pill)."""
    safe = text.replace("`", "'")
    return f"`{safe}`"


def _close_open_fence(answer: str) -> str:
    """Close a code fence left open by a partial answer, so the footer stays outside it."""
    fences = sum(1 for line in answer.splitlines() if line.lstrip().startswith("```"))
    return answer + "\n```" if fences % 2 else answer


def _compose(answer: str, *footer_lines: str) -> str:
    body = _close_open_fence(answer.rstrip())
    footer = "\n\n".join(line for line in footer_lines if line)
    if body and footer:
        return f"{body}\n\n{footer}"
    return body or footer


def progress_badges(answer: LiveAnswer) -> list[str]:
    """Stage, progress and chunk count of a running answer, as badges."""
    badges = [badge(answer.stage or "queued")]
    if answer.progress is not None:
        badges.append(badge(f"{answer.progress:.0f}%"))
        badges.append(badge(f"{answer.chunks_saved}/{answer.total_chunks} chunks saved"))
    return badges


def _format_cost(cost_usd: float) -> str:
    return f"${cost_usd:.2f}" if cost_usd >= 1 else f"${cost_usd:.4f}"


def result_badges(status: WorkflowStatus) -> list[str]:
    """Cache hit or fresh, duration, tokens, how the answer ended (cut at the limit, content
    filter), extra LLM calls, estimated cost (unknown for an unpriced model, none without
    an LLM call), for a hit what it saved, and a retry of a failed answer; for the fields
    present."""
    badges = [badge("cache hit" if status.cache_hit else "fresh")]
    if status.duration_ms is not None:
        badges.append(badge(f"{status.duration_ms / 1000:.1f} s"))
    if status.total_tokens is not None:
        detail = ""
        if status.prompt_tokens is not None and status.completion_tokens is not None:
            detail = f" ({status.prompt_tokens} in, {status.completion_tokens} out)"
        estimated = " (estimated)" if status.usage_estimated else ""
        badges.append(badge(f"{status.total_tokens} tokens{detail}{estimated}"))
    if status.finish_reason == "length":
        cut = f"{status.completion_tokens} tokens" if status.completion_tokens else "the limit"
        badges.append(badge(f"cut at {cut}"))
    elif status.finish_reason == "content_filter":
        badges.append(badge("stopped by content filter"))
    if status.llm_calls is not None and status.llm_calls > 1:
        billed = status.billed_completion_tokens
        about = "~" if status.billed_estimated else ""
        extra = f", {about}{billed} tokens out billed" if billed is not None else ""
        badges.append(badge(f"{status.llm_calls} LLM calls{extra}"))
    if not status.priced:
        badges.append(badge("cost unknown (unpriced model)"))
    elif status.cost_usd is not None and not status.cache_hit and status.llm_calls != 0:
        badges.append(badge(f"~{_format_cost(status.cost_usd)} estimated"))
    if status.cache_hit:
        saved = [_format_cost(status.saved_usd)] if status.saved_usd is not None else []
        if status.saved_ms is not None:
            saved.append(f"{status.saved_ms / 1000:.1f} s")
        badges.append(badge(f"saved {' and '.join(saved)}" if saved else "no LLM call"))
    if status.retry_of:
        badges.append(badge(RETRIED_BADGE))
    return badges


def history_link(links: TemporalLinks, workflow_id: str) -> str:
    return f"[Temporal history ↗]({links.workflow_url(workflow_id)})"


_FENCE = re.compile(r"^\s*(```|~~~)")


def inert_markdown(text: str) -> str:
    """Model output as Markdown that cannot fetch anything by itself: every image
    (`![alt](url)`, `![alt][ref]`) is shown as its source text instead of loaded, so an
    answer a prompt injection wrote cannot send the conversation to an outside URL in
    an image request. Code blocks are left as they are (they render nothing). Raw HTML is
    shown as text by Chainlit itself (`unsafe_allow_html = false`, ui/.chainlit); links
    stay links: following one takes the user's click."""
    lines = text.split("\n")
    in_code = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            lines[index] = line.replace("![", "!\\[")
    return "\n".join(lines)


def render_starting() -> str:
    return STARTING_TEXT


def restart_badge(restarts: int) -> str:
    return badge("restarted once" if restarts == 1 else f"restarted {restarts} times")


@dataclass(frozen=True, slots=True)
class EarlierPart:
    """An answer a later chat continued: its text comes first in the reply, its badges
    get a line of their own."""

    text: str
    footer: str


def earlier_part(
    text: str, status: WorkflowStatus | None, *, links: TemporalLinks, workflow_id: str
) -> EarlierPart:
    badges = result_badges(status) if status is not None else []
    if status is not None and status.status == "stopped":
        badges.append(badge("stopped"))
    return EarlierPart(text, " ".join([*badges, history_link(links, workflow_id)]))


def _joined(earlier: Sequence[EarlierPart], text: str) -> str:
    return "".join(part.text for part in earlier) + text


def render_running(
    answer: LiveAnswer,
    *,
    links: TemporalLinks,
    workflow_id: str,
    problem: str | None = None,
    stopping: bool = False,
    earlier: Sequence[EarlierPart] = (),
) -> str:
    """A reply whose workflow still runs: the answer so far (checkpointed text continued
    by the live preview), then stage and progress."""
    badges = progress_badges(answer)
    if stopping:
        badges.insert(0, badge("stopping…"))
    lines = [part.footer for part in earlier]
    if answer.restart_notes:
        lines.append(f"↻ *{answer.restart_notes[-1]}*")
    lines.append(" ".join([*badges, history_link(links, workflow_id)]))
    if problem:
        lines.append(f"**Gateway unreachable, retrying**: {problem}")
    return _compose(inert_markdown(_joined(earlier, answer.text)), *lines)


def render_ended(
    answer: LiveAnswer,
    status: WorkflowStatus | None,
    *,
    links: TemporalLinks,
    workflow_id: str,
    earlier: Sequence[EarlierPart] = (),
) -> str:
    """A reply whose workflow ended: the checkpointed answer, what happened, and the
    result badges (from the final ``status``, when the gateway gave one); after the
    answers it continued (``earlier``), and their badges."""
    text = answer.checkpointed
    outcome = answer.outcome or (status.status if status else "unknown")
    error = answer.error or (status.error if status else None)
    notice = ""
    if outcome == "stopped":
        notice = "*Stopped: the answer is kept as it was when it was stopped.*"
    elif outcome in ("cancelled", "canceled"):
        kept = "what was saved is kept above." if text.strip() else "no text had been written yet."
        notice = f"**Stopped** before the answer began: {kept}"
    elif outcome == "failed":
        notice = f"**The answer failed**: {error or 'the workflow failed'}"
        if status is not None and status.retryable:
            notice += f" — {RETRY_HINT}"
    elif outcome in ("terminated", "timed_out"):
        kept = "what was saved is kept above" if text.strip() else "nothing was saved"
        title = "Terminated" if outcome == "terminated" else "Timed out"
        notice = f"**{title}**: {error or 'the workflow was stopped in Temporal'} ({kept})"
        if status is not None and status.retryable:
            notice += f" — {RETRY_HINT}"
    elif status is not None and status.notice:
        notice = f"*{status.notice}*"
    elif outcome != "completed":
        reason = f": {error}" if error else "."
        notice = f"**The workflow ended as {outcome}**{reason}"
    badges = result_badges(status) if status is not None else []
    if answer.restarts:
        badges.append(restart_badge(answer.restarts))
    footer = " ".join([*badges, history_link(links, workflow_id)])
    earlier_footers = [part.footer for part in earlier]
    return _compose(inert_markdown(_joined(earlier, text)), notice, *earlier_footers, footer)


def render_rejected(message: str) -> str:
    """The gateway refused the prompt (nothing was started)."""
    return f"**This prompt was not accepted**: {message}"


def render_start_failed(message: str) -> str:
    """The gateway could not start the workflow."""
    return f"**The answer could not be started**: {message}"


def render_retry_refused(message: str) -> str:
    """The gateway would not ask a failed answer again (the reply above stays as it was)."""
    return f"**Could not retry the answer**: {message}"


def render_follow_failed(
    answer: str, message: str, *, links: TemporalLinks, workflow_id: str
) -> str:
    """Following the workflow stopped on an error (e.g. the gateway lost track of it)."""
    return _compose(
        answer,
        f"**Lost track of the answer**: {message}",
        history_link(links, workflow_id),
    )
