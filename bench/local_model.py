"""Embedded model: llama.cpp called directly vs the same model behind the service's HTTP API.

Both paths get the same prompts, in the same run, interleaved (direct, service, direct, ...) so
that machine noise hits both alike. Greedy decoding on both sides, so they produce the same
tokens. Reported per path: time to first token (request start -> first text) and decode speed
(tokens after the first / time from first to last token).

    python bench/local_model.py                  # both paths, service on a free port
    python bench/local_model.py --skip-service   # llama.cpp alone
    python bench/local_model.py --cpus 0,1       # pin this process and the service alike

Targets: the service adds at most 5% to first-token time and loses at most 5% tokens/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chat.models.local.files import default_model_path  # noqa: E402

DEFAULT_PROMPT = "Write a short story about a robot who learns to paint."
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
READY_TIMEOUT_S = 120.0
BUSY_LOAD = 1.0  # 1-minute load average above which other work skews the numbers
REQUEST_TIMEOUT_S = 300.0


@dataclass
class Sample:
    """One request: when its first and last token arrived, and how many tokens came."""

    ttft_s: float
    tokens: int
    decode_s: float
    reported_tokens: int | None = None

    @property
    def tokens_per_s(self) -> float:
        """Decode speed after the first token."""
        if self.tokens < 2 or self.decode_s <= 0:
            return float("nan")
        return (self.tokens - 1) / self.decode_s


@dataclass
class Series:
    """All samples of one path."""

    name: str
    samples: list[Sample] = field(default_factory=list)

    def median_ttft_ms(self) -> float:
        """Median time to first token, in milliseconds."""
        return 1000 * statistics.median(s.ttft_s for s in self.samples)

    def median_tokens_per_s(self) -> float:
        """Median decode speed."""
        return statistics.median(s.tokens_per_s for s in self.samples)

    def mean_tokens(self) -> float:
        """Mean tokens per answer."""
        return statistics.fmean(s.tokens for s in self.samples)


def prompts(base: str, runs: int, vary: bool) -> list[str]:
    """One message per run; varied at the front so llama.cpp's prefix cache cannot skip it."""
    if not vary:
        return [base] * runs
    return [f"Request {i}. {base}" for i in range(runs)]


class Direct:
    """llama-cpp-python's own streaming chat API, as a user of the library would call it."""

    def __init__(self, *, path: Path, threads: int, context: int, instructions: str) -> None:
        from llama_cpp import Llama

        self._llama = Llama(
            model_path=str(path),
            n_ctx=context,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self._instructions = instructions

    def run(self, message: str, max_tokens: int) -> Sample:
        """One streamed chat completion."""
        messages: Any = [
            {"role": "system", "content": self._instructions},
            {"role": "user", "content": message},
        ]
        started = time.perf_counter()
        first = last = 0.0
        tokens = 0
        chunks: Any = self._llama.create_chat_completion(
            messages=messages, stream=True, max_tokens=max_tokens, temperature=0.0
        )
        for chunk in chunks:
            if chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                if tokens == 0:
                    first = last
                tokens += 1
        return Sample(ttft_s=first - started, tokens=tokens, decode_s=last - first)

    def close(self) -> None:
        """Free the model."""
        self._llama.close()


class Service:
    """The service in a subprocess, read the way a client reads it: SSE lines over HTTP."""

    def __init__(self, *, port: int, env: dict[str, str], cpus: str | None) -> None:
        command = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1"]
        command += ["--port", str(port)]
        if cpus and shutil.which("taskset"):
            command = ["taskset", "-c", cpus, *command]
        self.url = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        self._client = httpx.Client(timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0))

    def wait_ready(self) -> None:
        """Poll /readyz until the model is loaded (a bench may poll; tests may not)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise SystemExit(f"service exited with {self._process.returncode} before ready")
            with contextlib.suppress(httpx.TransportError):
                if self._client.get(f"{self.url}/readyz").status_code == 200:
                    return
            time.sleep(0.2)
        raise SystemExit(f"service not ready after {READY_TIMEOUT_S:.0f} s")

    def run(self, message: str) -> Sample:
        """One POST /chat, streamed."""
        started = time.perf_counter()
        first = last = 0.0
        tokens = 0
        reported: int | None = None
        event = ""
        with self._client.stream(
            "POST",
            f"{self.url}/chat",
            json={"message": message},
            headers={"Accept": "text/event-stream"},
        ) as response:
            if response.status_code != 200:
                response.read()
                raise SystemExit(f"POST /chat: {response.status_code} {response.text[:200]}")
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "delta":
                        last = time.perf_counter()
                        if tokens == 0:
                            first = last
                        tokens += 1
                    elif event == "done":
                        reported = json.loads(line[6:])["usage"]["output_tokens"]
                    elif event == "error":
                        raise SystemExit(f"stream error: {line[6:200]}")
        return Sample(
            ttft_s=first - started, tokens=tokens, decode_s=last - first, reported_tokens=reported
        )

    def close(self) -> None:
        """Stop the service: SIGTERM, then SIGKILL if it lingers."""
        self._client.close()
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(args: argparse.Namespace) -> dict[str, str]:
    """The service's settings: the same model, threads, context, limit and instructions."""
    env = dict(os.environ)
    env.update(
        CHAT_BACKEND="local",
        CHAT_INSTRUCTIONS=args.instructions,
        CHAT_MAX_OUTPUT_TOKENS=str(args.max_tokens),
        CHAT_LOCAL_THREADS=str(args.threads),
        CHAT_LOCAL_CONTEXT=str(args.context),
        CHAT_LOG_LEVEL=args.service_log_level,
    )
    return env


def interleaved(runs: int, paths: Sequence[str]) -> Iterator[tuple[int, str]]:
    """Run i of every path before run i+1 of any."""
    for i in range(runs):
        for path in paths:
            yield i, path


def report(direct: Series, service: Series | None) -> None:
    """A small table and the service/direct ratios against the targets."""
    header = f"{'path':<8} {'runs':>4} {'ttft ms p50':>12} {'tok/s p50':>10} {'tokens':>7}"
    print(header)
    print("-" * len(header))
    for series in (direct, service):
        if series is None:
            continue
        print(
            f"{series.name:<8} {len(series.samples):>4} {series.median_ttft_ms():>12.1f} "
            f"{series.median_tokens_per_s():>10.1f} {series.mean_tokens():>7.1f}"
        )
    if service is None:
        return
    ttft_ratio = service.median_ttft_ms() / direct.median_ttft_ms()
    speed_ratio = service.median_tokens_per_s() / direct.median_tokens_per_s()
    print()
    ttft_ok = _ok(ttft_ratio <= 1.05)
    speed_ok = _ok(speed_ratio >= 0.95)
    print(f"service/direct first token: x{ttft_ratio:.3f}  (target <= 1.05: {ttft_ok})")
    print(f"service/direct tokens/s:    x{speed_ratio:.3f}  (target >= 0.95: {speed_ok})")
    reported = [s.reported_tokens for s in service.samples if s.reported_tokens is not None]
    if reported:
        print(f"service usage.output_tokens mean: {statistics.fmean(reported):.1f}")


def warn_if_busy(when: str) -> None:
    """Say so when other processes compete for the cores: the ratios then mean little."""
    load = os.getloadavg()[0]
    if load > BUSY_LOAD:
        print(f"warning: load average {load:.2f} {when}; other work skews these numbers")


def _ok(passed: bool) -> str:
    return "met" if passed else "MISSED"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs per path")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs per path first")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--instructions", default=DEFAULT_INSTRUCTIONS)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument(
        "--same-prompt",
        action="store_true",
        help="repeat one message: llama.cpp's prefix cache then skips the prompt evaluation",
    )
    parser.add_argument("--skip-service", action="store_true", help="measure llama.cpp alone")
    parser.add_argument("--port", type=int, default=0, help="service port; 0 picks a free one")
    parser.add_argument("--cpus", default=None, help="pin both paths to these CPUs, e.g. 0,1")
    parser.add_argument("--service-log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Measure both paths and print the comparison."""
    args = parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    warn_if_busy("before the run")  # only before: this bench itself keeps two cores busy
    path = default_model_path()
    messages = prompts(args.prompt, args.warmup + args.runs, vary=not args.same_prompt)
    direct = Direct(
        path=path, threads=args.threads, context=args.context, instructions=args.instructions
    )
    service: Service | None = None
    if not args.skip_service:
        port = args.port or free_port()
        service = Service(port=port, env=service_env(args), cpus=args.cpus)
    try:
        if service is not None:
            service.wait_ready()
        results = {"direct": Series("direct"), "service": Series("service")}
        paths = ["direct"] if service is None else ["direct", "service"]
        for i, name in interleaved(args.warmup + args.runs, paths):
            if name == "direct":
                sample = direct.run(messages[i], args.max_tokens)
            else:
                assert service is not None
                sample = service.run(messages[i])
            if i >= args.warmup:
                results[name].samples.append(sample)
        print(
            f"model {path.name}, threads {args.threads}, context {args.context}, "
            f"max tokens {args.max_tokens}, {'same' if args.same_prompt else 'varied'} prompts"
        )
        report(results["direct"], results["service"] if service is not None else None)
    finally:
        direct.close()
        if service is not None:
            service.close()


if __name__ == "__main__":
    main()
