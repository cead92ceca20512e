"""Every activity timeout and retry policy, with what each value implies.

Recovery arithmetic (one worker killed with `kill -9`, another alive):
- `save_chunk` activities already queued or running on the survivor go on at once;
- an in-flight `save_chunk` of the dead worker times out `SAVE_CHUNK_TIMEOUT` (1 s)
  after it started, and its next attempt starts 1 s later: the server never retries
  sooner than 1 s, whatever `initial_interval` asks, and never times an attempt out
  sooner than 1 s either (measured: `python -m bench.server_timers`). So such a chunk
  is saved again about 2 s after its attempt started — up to ~2.2 s after the kill;
- the workflow task that was sticky to the dead worker moves to the shared queue after
  the worker's sticky schedule-to-start timeout (`common.contract.STICKY_SCHEDULE_TO_START`, 1 s),
  so the window of chunks in flight refills about 1 s after the crash;
- a workflow task the dead worker had started is handed to another worker after
  `common.contract.WORKFLOW_TASK_TIMEOUT` (2 s; Temporal's default is 10 s);
- an in-flight `generate_full_text` is retried `GENERATE_HEARTBEAT_TIMEOUT` (3 s) after
  the last heartbeat.
So checkpointing stalls 1-2 s (about 2.2 s at worst) after a `kill -9` (measured:
bench/recovery.py). Shorter timeouts would not help (the server's 1 s floors) and
longer ones would slow recovery; under load (100 concurrent chats on 2 cores) workflow
tasks took up to 1.9 s and `save_chunk` attempts 0.4 s p50, so these are also the
shortest values that do not fire on live workers.
A graceful stop (SIGTERM) lets in-flight activities finish and tells the server the
worker is gone (its sticky queue is released), so nothing waits for a timeout.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from common.contract import ACTIVITY_TASK_POLLS

# validate_prompt: pure CPU work of microseconds; a timeout only means a dead worker.
VALIDATE_TIMEOUT = timedelta(seconds=5)
VALIDATE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_attempts=5,
    non_retryable_error_types=["InvalidPromptError"],
)

# generate_full_text: one streamed LLM call. Long answers at a slow provider can take
# minutes, so the start-to-close bound is generous; a dead worker is found through the
# heartbeat instead (heartbeats are sent while tokens arrive).
GENERATE_TIMEOUT = timedelta(minutes=10)
GENERATE_HEARTBEAT_TIMEOUT = timedelta(seconds=3)
#
# Attempts: six for provider trouble (about a minute before the chat fails), plus one
# for each activity poll a frozen worker still holds at the server. Such a worker's
# attempt misses its heartbeats, and the server can hand each retry to one of its open
# polls, where it times out again (seen in tests/test_generation_resume.py: attempts 2
# and 3 went to the frozen worker). With six attempts, a worker frozen for a minute
# could use them all up and fail a chat whose provider was fine.
GENERATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6 + ACTIVITY_TASK_POLLS,
    non_retryable_error_types=["ProviderRejectedError"],
)
# The policy of chats started before PATCH_FROZEN_WORKER_RETRIES (workflows/chat.py).
GENERATE_RETRY_V1 = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=["ProviderRejectedError"],
)

# save_chunk: one INSERT of a few hundred bytes (milliseconds, tens under load). 1 s
# bounds how long a chunk held by a killed worker waits; an attempt that is merely slow
# is retried harmlessly (idempotent). Unlimited attempts with capped backoff: while
# PostgreSQL is down the chat waits for it rather than failing, and nothing is lost.
# (The server waits at least 1 s before any retry, so the 0.2 s below acts as 1 s.)
SAVE_CHUNK_TIMEOUT = timedelta(seconds=1)
SAVE_CHUNK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=0,
)

# claim_or_reuse_answer: a lookup (milliseconds), or a wait while an identical chat
# generates the same answer. The wait is bounded by the longest generation plus its
# checkpointing; the heartbeat finds a dead worker quickly.
CACHE_LOOKUP_TIMEOUT = GENERATE_TIMEOUT + timedelta(minutes=5)
CACHE_LOOKUP_HEARTBEAT_TIMEOUT = timedelta(seconds=3)
CACHE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=0,
)
CACHE_WRITE_TIMEOUT = timedelta(seconds=5)

# collect_shown_answer: a read of the chat's log, after a cancel at the provider (best
# effort, at most 3 s per generation still open there: activities/resumable.py).
COLLECT_SHOWN_TIMEOUT = timedelta(seconds=30)

# record_generation: one upsert of the generation row, same reasoning as save_chunk.
RECORD_TIMEOUT = timedelta(seconds=5)
RECORD_RETRY = SAVE_CHUNK_RETRY
