#!/usr/bin/env bash
# Build the app image with podman (no Docker engine here):   docker/build.sh [extra podman build args]
#
#   IMAGE=streaming-chat        final image tag
#   BUILDER_IMAGE=streaming-chat-builder   also tag this build's builder stage (size/debugging); "" skips
#   PIP_MIRROR=auto|0           auto: hand the host's pip settings (index URLs, find-links, CA) to
#                               the build; 0: plain PyPI, no host settings
#   LLAMA_WHEEL=auto|0          auto: reuse the host's llama-cpp-python wheel from the project's
#                               wheel cache (scripts/install-venv.sh) when it was built with the
#                               flags this build uses; 0: compile it in the build
#
# Needs the base image `python:3.11-slim` in local storage: pulled normally, or made by
# docker/make-base-image.sh on machines without registry access.
#
# How the build gets the host's pip mirror without baking host paths into the image:
#   * the pip.conf and CA bundle go in as build secrets (RUN --mount=type=secret): never in a layer;
#   * local file:// indexes / find-links dirs are served read-only over HTTP on 127.0.0.1 for the
#     build's duration (the build shares the host network). `podman build --volume` was not used:
#     it leaves empty mount-point directories (e.g. /opt/pypi) in every stage's layers, final too.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
IMAGE="${IMAGE:-streaming-chat}"
BUILDER_IMAGE="${BUILDER_IMAGE-streaming-chat-builder}"
PIP_MIRROR="${PIP_MIRROR:-auto}"
LLAMA_WHEEL="${LLAMA_WHEEL:-auto}"
HOST_PYTHON="${HOST_PYTHON:-$(command -v python3 || true)}"

if ! podman image exists python:3.11-slim; then
  echo "build.sh: base image python:3.11-slim not found; run docker/make-base-image.sh first" >&2
  echo "          (or pull it on a machine with registry access)" >&2
  exit 1
fi

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

build_args=(--isolation chroot --format docker --network host --layers -f "$root/Dockerfile")

# OCI labels: version from pyproject.toml, the commit, the origin URL when the clone has one.
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -n1)"
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  revision="$revision-dirty"
fi
source_url="$(git -C "$root" remote get-url origin 2>/dev/null || true)"
build_args+=(--build-arg "VERSION=${version:-0.0.0}" --build-arg "REVISION=$revision")
# Also as --label, set on the final image whatever the cache holds: buildah 1.28 reuses a cached
# LABEL layer even when the ARG it reads has changed (a new commit kept the old revision).
build_args+=(--label "org.opencontainers.image.version=${version:-0.0.0}")
build_args+=(--label "org.opencontainers.image.revision=$revision")
if [[ -n "$source_url" ]]; then
  build_args+=(--label "org.opencontainers.image.source=$source_url")
fi

# The llama-cpp-python wheel the host's virtualenv was installed from, if it has the flags this
# build uses (scripts/llama-cmake-args.sh, as the Dockerfile runs it): passed as the build
# context `llama-wheel`, so llama.cpp is not compiled a second time. An empty one otherwise.
mkdir "$tmp/llama-wheel"
if [[ "$LLAMA_WHEEL" != 0 ]]; then
  wheel_cache="${CHAT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streaming-chat/wheels}"
  llama_version="$(sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' "$root/requirements.txt")"
  cmake_args="$(CHAT_LLAMA_NATIVE=0 bash "$root/scripts/llama-cmake-args.sh")"
  for dir in "$wheel_cache/llama-cpp-python-$llama_version-"*; do
    [[ -d "$dir" ]] || continue
    wheel="$(compgen -G "$dir/llama_cpp_python-$llama_version-*.whl" | head -n1 || true)"
    if [[ -n "$wheel" && "$(cat "$dir/cmake-args.txt" 2>/dev/null)" == "$cmake_args" ]]; then
      cp "$wheel" "$dir/cmake-args.txt" "$tmp/llama-wheel/"
      echo "build.sh: reusing $wheel (same CMAKE_ARGS)" >&2
      break
    fi
  done
fi
build_args+=(--build-context "llama-wheel=$tmp/llama-wheel")

if [[ "$PIP_MIRROR" != 0 && -n "$HOST_PYTHON" ]] && "$HOST_PYTHON" -m pip --version >/dev/null 2>&1; then
  port="$("$HOST_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # Translate the host's effective pip settings (env + config files) into a pip.conf for the build.
  "$HOST_PYTHON" - "$tmp" "$port" <<'PY'
import os, shlex, subprocess, sys
from pathlib import Path
from urllib.parse import urlparse, unquote

tmp, port = Path(sys.argv[1]), sys.argv[2]
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                     text=True, check=False).stdout
settings: dict[str, str] = {}
for line in out.splitlines():           # e.g.  :env:.find-links='/opt/wheels'  global.cert='...'
    key, _, value = line.partition("=")
    scope, _, name = key.rpartition(".")
    value = value.strip().strip("'\"")
    if scope == ":env:" or name not in settings:  # the environment wins over files
        settings[name] = value

served = tmp / "served"
served.mkdir()
mounts: list[str] = []

def local(loc: str) -> str:
    """A file:// URL or local dir -> an http://127.0.0.1 URL serving it; other URLs unchanged."""
    path = unquote(urlparse(loc).path) if loc.startswith("file:") else loc
    if not path.startswith("/"):
        return loc
    p = Path(path)
    if not p.exists():
        return ""
    # A PEP 503 ".../simple" links to "../../files/...": serve its parent.
    base, suffix = (p.parent, "simple/") if p.name == "simple" else (p, "")
    name = f"m{len(mounts)}"
    (served / name).symlink_to(base)
    mounts.append(str(base))
    return f"http://127.0.0.1:{port}/{name}/{suffix}"

conf = ["[global]"]
for name in ("index-url", "extra-index-url", "find-links"):
    if name in settings:
        urls = [u for u in (local(v) for v in settings[name].split()) if u]
        if urls:
            conf.append(f"{name} = " + " ".join(urls))
trusted = settings.get("trusted-host", "").split()
if mounts:
    trusted.append("127.0.0.1")
if trusted:
    conf.append("trusted-host = " + " ".join(trusted))
ca = settings.get("cert") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
if Path(ca).is_file():
    (tmp / "ca.path").write_text(ca)
    conf.append("cert = /run/secrets/pip_ca")
if "timeout" in settings or "default-timeout" in settings:
    conf.append("timeout = " + (settings.get("timeout") or settings["default-timeout"]))
(tmp / "pip.conf").write_text("\n".join(conf) + "\n")
print("build.sh: pip.conf for the build:\n  " + "\n  ".join(conf[1:]), file=sys.stderr)
print("build.sh: serving read-only on 127.0.0.1:" + port + ": " + (", ".join(mounts) or "nothing"),
      file=sys.stderr)
PY
  build_args+=(--secret "id=pip_conf,src=$tmp/pip.conf")
  [[ -f "$tmp/ca.path" ]] && build_args+=(--secret "id=pip_ca,src=$(cat "$tmp/ca.path")")
  if compgen -G "$tmp/served/*" >/dev/null; then
    "$HOST_PYTHON" -m http.server --bind 127.0.0.1 --directory "$tmp/served" "$port" \
      >"$tmp/http.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 50); do
      "$HOST_PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/', timeout=1)" \
        2>/dev/null && break
      sleep 0.1
    done
  fi
fi

start=$(date +%s)
podman build "${build_args[@]}" -t "$IMAGE" "$@" "$root" 2>&1 | tee "$tmp/build.log"
end=$(date +%s)
if [[ -n "$BUILDER_IMAGE" ]]; then
  # Tag the builder stage of this very build (for its size, or to debug it): its last layer is
  # the last "--> ID" line before the last stage's ("[N/N]") first step. No second build needed.
  builder_id="$(awk '
    match($0, /^\[[0-9]+\/[0-9]+\] STEP 1\//) {
      split(substr($0, 2, index($0, "]") - 2), n, "/"); if (n[1] == n[2]) { print id; exit }
    }
    /^--> [0-9a-f]+$/ {id = $2}' "$tmp/build.log")"
  if [[ -n "$builder_id" ]]; then
    podman tag "$builder_id" "$BUILDER_IMAGE"
  else
    echo "build.sh: could not find the builder stage's image id; $BUILDER_IMAGE not tagged" >&2
  fi
fi

echo "build.sh: built $IMAGE in $((end - start)) s"
podman images --format '{{.Repository}}:{{.Tag}}  {{.Size}}  {{.ID}}' \
  | grep -E "(^|/)($IMAGE|${BUILDER_IMAGE:-$IMAGE}|python):" || true
