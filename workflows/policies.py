"""Every activity timeout and retry policy, with what each value implies.

Recovery arithmetic (one worker killed with `kill -9`, another alive):
- an in-flight `save_chunk` is retried `SAVE_CHUNK_TIMEOUT` after it started, so the
  next chunk lands at most ~2 s after the crash;
- an in-flight `generate_full_text` is retried `GENERATE_HEARTBEAT_TIMEOUT` after the
  last heartbeat (~3 s);
- the workflow task that was sticky to the dead worker moves to the shared queue after
  the worker's sticky schedule-to-start timeout (see worker.py), 2 s.
A graceful stop (SIGTERM) lets in-flight activities finish and tells the server the
worker is gone, so nothing waits for a timeout.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

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
GENERATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,  # about a minute of provider trouble before the chat fails
    non_retryable_error_types=["ProviderRejectedError"],
)

# save_chunk: one INSERT of a few hundred bytes (milliseconds). 2 s bounds how long a
# chunk held by a killed worker waits. Unlimited attempts with capped backoff: while
# PostgreSQL is down the chat waits for it rather than failing, and nothing is lost.
SAVE_CHUNK_TIMEOUT = timedelta(seconds=2)
SAVE_CHUNK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=0,
)

# record_generation: one upsert of the generation row, same reasoning as save_chunk.
RECORD_TIMEOUT = timedelta(seconds=5)
RECORD_RETRY = SAVE_CHUNK_RETRY
