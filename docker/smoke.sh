#!/usr/bin/env bash
# Smoke-test the built image with podman: docker/smoke.sh [extra `podman run` args, e.g. -e CHAT_BACKEND=fake]
#
# Runs the image detached on 127.0.0.1:$PORT, then checks, in order:
#   0. the image carries its OCI labels (org.opencontainers.image.*)
#   1. /readyz answers 200 within $READY_TIMEOUT s (the embedded model loads in the background),
#      on the embedded `local` backend: no API key is given to the container
#   2. /healthz is 200, the image's HEALTHCHECK command passes (`podman healthcheck run`) and
#      podman then reports the container `healthy`
#   3. POST /chat streams SSE with `event: delta` and a final `event: done` (curl -N)
#   4. the server process runs as a non-root uid (`podman exec ... id -u`)
#   5. no compiler/cmake in the final image (gcc, cc, g++, cmake, and none in the venv), and
#      llama.cpp was built with the portable flags of scripts/llama-cmake-args.sh
#   6. `podman stop` (SIGTERM) ends it within the grace period with exit status 0 (no SIGKILL)
#   7. the same with a stream in flight (second container, CHAT_BACKEND=fake with slow tokens,
#      CHAT_SHUTDOWN_GRACE_S=1): the stream ends with an `error` event `shutting_down`, and the
#      process exits 0 within the grace (MIDSTREAM_CHECK=0 skips)
# The container is always removed at the end (the image is kept). Exit status 0 = all passed.
#
#   IMAGE=streaming-chat  PORT=18000  READY_TIMEOUT=180  STOP_GRACE=15  NAME=streaming-chat-smoke
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
IMAGE="${IMAGE:-streaming-chat}"
NAME="${NAME:-streaming-chat-smoke}"
PORT="${PORT:-18000}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
# The app needs up to CHAT_SHUTDOWN_GRACE_S + 5 s (default 10 s) to drain; podman's default is 10 s.
STOP_GRACE="${STOP_GRACE:-15}"
base="http://127.0.0.1:$PORT"
podman=(podman --runtime runc --cgroup-manager=cgroupfs)
# podman also tries to arm systemd timers for the image's HEALTHCHECK; hosts without systemd
# (like this one) get a harmless error line per run/stop/rm, which is filtered out here.
quiet() { "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

failures=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failures=$((failures + 1)); }
cleanup() { "${podman[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT

command -v curl >/dev/null || { echo "smoke.sh: needs curl on the host" >&2; exit 2; }
cleanup

# 0. labels ------------------------------------------------------------------------------------
labels="$("${podman[@]}" image inspect -f '{{json .Labels}}' "$IMAGE" 2>/dev/null || true)"
missing=""
for key in title description version revision; do
  [[ "$labels" == *"\"org.opencontainers.image.$key\":\""[^\"]* ]] || missing+=" $key"
done
head_rev="$(git -C "$here/.." rev-parse HEAD 2>/dev/null || true)"
if [[ -n "$head_rev" && "$labels" != *"\"org.opencontainers.image.revision\":\"$head_rev"* ]]; then
  missing+=" revision=$head_rev (this checkout's commit)"
fi
if [[ -z "$missing" ]]; then
  pass "OCI labels: $(printf '%s' "$labels" | tr -d '{}' | tr ',' '\n' | grep -E 'image\.(version|revision)' | tr '\n' ' ')"
else
  fail "OCI labels missing:$missing ($labels)"
fi

# --health-interval=disable: podman schedules healthchecks with systemd timers, which this host
# lacks; the image's HEALTHCHECK is run explicitly below instead.
quiet "${podman[@]}" run -d --name "$NAME" -p "127.0.0.1:$PORT:8000" \
  --stop-timeout "$STOP_GRACE" --health-interval=disable "$@" "$IMAGE" >/dev/null
echo "started $NAME from $IMAGE on $base"

# 1. ready -------------------------------------------------------------------------------------
deadline=$((SECONDS + READY_TIMEOUT))
code=000
while ((SECONDS < deadline)); do
  if [[ "$("${podman[@]}" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != true ]]; then
    break
  fi
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/readyz" || true)"
  [[ "$code" == 200 ]] && break
  sleep 1
done
if [[ "$code" == 200 ]]; then
  pass "/readyz 200 after $((SECONDS - deadline + READY_TIMEOUT)) s: $(curl -s --max-time 2 "$base/readyz")"
  "${podman[@]}" logs "$NAME" 2>&1 | grep -m1 '"started"' | cut -c1-240 | sed 's/^/    | /' || true
else
  fail "/readyz not 200 within ${READY_TIMEOUT} s (last: $code)"
  "${podman[@]}" logs --tail 40 "$NAME" 2>&1 | sed 's/^/    | /'
  exit 1
fi

# 2. liveness + HEALTHCHECK ------------------------------------------------------------------------
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/healthz" || true)"
if [[ "$code" == 200 ]]; then pass "/healthz 200"; else fail "/healthz returned $code"; fi
hc="$("${podman[@]}" image inspect -f '{{json .Config.Healthcheck}}' "$IMAGE" 2>/dev/null || true)"
health=""
if [[ "$hc" == *healthz* ]] && quiet "${podman[@]}" healthcheck run "$NAME" >/dev/null; then
  health="$("${podman[@]}" inspect -f '{{.State.Health.Status}}' "$NAME" 2>/dev/null || true)"
fi
if [[ "$health" == healthy ]]; then
  pass "image HEALTHCHECK present and passing; podman reports the container $health"
else
  fail "image HEALTHCHECK missing or failing (health '$health'; $hc)"
fi

# 3. a streamed answer -----------------------------------------------------------------------------
out="$(mktemp)"
started=$(date +%s.%N)
curl -sS -N --max-time 120 -X POST "$base/chat" \
  -H 'Content-Type: application/json' -H 'Accept: text/event-stream' \
  -d '{"message":"What is the capital of France?"}' >"$out" 2>&1 || true
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
deltas=$(grep -c '^event: delta' "$out" || true)
if ((deltas > 0)) && grep -q '^event: done' "$out"; then
  answer="$(grep '^data:' "$out" | sed -n 's/.*"text": *"\([^"]*\)".*/\1/p' | tr -d '\n' | head -c 200)"
  pass "POST /chat streamed $deltas delta events + done in ${elapsed} s: ${answer:-(text field not parsed)}"
else
  fail "POST /chat: no delta/done events; response was:"
  head -c 2000 "$out" | sed 's/^/    | /'
fi
rm -f "$out"

# 4. non-root --------------------------------------------------------------------------------------
uid="$("${podman[@]}" exec "$NAME" id -u 2>/dev/null || echo '?')"
pid1_uid="$("${podman[@]}" exec "$NAME" sh -c "awk '/^Uid:/ {print \$2}' /proc/1/status" 2>/dev/null || echo '?')"
if [[ "$uid" =~ ^[0-9]+$ && "$uid" != 0 && "$pid1_uid" == "$uid" ]]; then
  pass "runs as non-root uid $uid (PID 1 too)"
else
  fail "exec uid=$uid, PID 1 uid=$pid1_uid"
fi

# 5. no toolchain ----------------------------------------------------------------------------------
# shellcheck disable=SC2016  # $t expands inside the container's shell
tools="$("${podman[@]}" exec "$NAME" sh -c \
  'for t in gcc cc g++ c++ cmake make ld; do command -v $t; done; ls /opt/venv/bin | grep -x -E "cmake|ninja" || true' \
  2>/dev/null || echo 'exec failed')"
if [[ -z "$tools" ]]; then
  pass "no gcc/cc/g++/cmake/make/ld in the image"
else
  fail "toolchain present: $tools"
fi
built="$("${podman[@]}" exec "$NAME" cat /opt/venv/llama-cpp-build.txt 2>/dev/null || echo '?')"
expected="$(CHAT_LLAMA_NATIVE=0 bash "$here/../scripts/llama-cmake-args.sh" "$(uname -m)")"
if [[ "$built" == "$expected" ]]; then
  pass "llama.cpp built with the portable flags: $built"
else
  fail "llama.cpp built with '$built', expected '$expected'"
fi

# 6. graceful stop ---------------------------------------------------------------------------------
t0=$SECONDS
quiet "${podman[@]}" stop -t "$STOP_GRACE" "$NAME" >/dev/null
took=$((SECONDS - t0))
status="$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$NAME")"
if [[ "$status" == 0 ]] && ((took < STOP_GRACE)); then
  pass "SIGTERM: exited 0 in ${took} s (grace ${STOP_GRACE} s)"
else
  fail "SIGTERM: exit status $status after ${took} s (grace ${STOP_GRACE} s; 137 = killed)"
fi
"${podman[@]}" logs --tail 4 "$NAME" 2>&1 | cut -c1-200 | sed 's/^/    | /'

# 7. SIGTERM with a stream in flight (fake backend, slow tokens): drained, then a clean exit -------
if [[ "${MIDSTREAM_CHECK:-1}" == 1 ]]; then
  "${podman[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  quiet "${podman[@]}" run -d --name "$NAME" -p "127.0.0.1:$PORT:8000" --stop-timeout "$STOP_GRACE" \
    --health-interval=disable -e CHAT_BACKEND=fake -e CHAT_FAKE_TOKENS=400 -e CHAT_FAKE_DELAY_MS=100 \
    -e CHAT_SHUTDOWN_GRACE_S=1 \
    "$@" "$IMAGE" >/dev/null
  for _ in $(seq 60); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/readyz" || true)" == 200 ]] && break
    sleep 0.5
  done
  out="$(mktemp)"
  curl -sS -N --max-time 60 -X POST "$base/chat" -H 'Content-Type: application/json' \
    -d '{"message":"a long one"}' >"$out" 2>&1 &
  curl_pid=$!
  sleep 2
  t0=$SECONDS
  quiet "${podman[@]}" stop -t "$STOP_GRACE" "$NAME" >/dev/null
  took=$((SECONDS - t0))
  wait "$curl_pid" || true
  status="$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$NAME")"
  last="$(grep '^event:' "$out" | tail -n1)"
  last_data="$(grep '^data:' "$out" | tail -n1)"
  if [[ "$status" == 0 ]] && ((took < STOP_GRACE)) && grep -q '^event: delta' "$out" \
      && [[ "$last" == "event: error" && "$last_data" == *'"code":"shutting_down"'* ]]; then
    pass "SIGTERM mid-stream: after $(grep -c '^event: delta' "$out") deltas the stream ended with: ${last_data}; exited 0 in ${took} s"
  else
    fail "SIGTERM mid-stream: exit $status after ${took} s, last event '${last}' ${last_data}"
  fi
  rm -f "$out"
fi

echo
if ((failures)); then echo "smoke: $failures check(s) FAILED"; exit 1; fi
echo "smoke: all checks passed"
