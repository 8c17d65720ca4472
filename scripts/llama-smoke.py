"""Generate a few tokens with the embedded model in a child process; report a crash clearly.

Run by `make test` before the test suite: a llama.cpp build that faults on this CPU (a native
build on an Intel Xeon with AMX, say) then fails here with one clear message, instead of
killing the test run, or the server on its first chat.

Usage: python scripts/llama-smoke.py   (exit 0: it answered; 1: it crashed or failed)
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120
CHILD = """
import sys
from chat.models.local.files import default_model_path
import llama_cpp
llama = llama_cpp.Llama(model_path=str(default_model_path()), n_ctx=256, verbose=False)
reply = llama.create_chat_completion(
    messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=4
)
print(llama_cpp.llama_print_system_info().decode().strip())
print(reply["usage"]["completion_tokens"])
"""


def main() -> int:
    if importlib.util.find_spec("llama_cpp") is None:
        print("llama-smoke: llama-cpp-python is not installed; skipped")
        return 0
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-c", CHILD],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        print(f"llama-smoke: FAILED: no answer from llama.cpp within {TIMEOUT_S} s")
        return 1
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        print(
            f"llama-smoke: FAILED: llama.cpp crashed ({name}) generating 4 tokens. The build is "
            "not portable to this CPU: rebuild it with `make clean && make test` (portable "
            "x86-64-v3 flags unless CHAT_LLAMA_NATIVE=1).\n" + result.stderr[-2000:]
        )
        return 1
    if result.returncode != 0:
        print(f"llama-smoke: FAILED (exit status {result.returncode}):\n{result.stderr[-2000:]}")
        return 1
    info, tokens = result.stdout.strip().splitlines()[-2:]
    elapsed = time.monotonic() - started
    print(f"llama-smoke: ok, {tokens} tokens in {elapsed:.1f} s; {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
