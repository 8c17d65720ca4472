#!/usr/bin/env bash
# Create the virtualenv from the pinned, hashed locks, with llama-cpp-python built portably.
#
# Usage: scripts/install-venv.sh VENV PYTHON [REQUIREMENTS...]   (default: requirements.txt)
#
# llama-cpp-python is an sdist that compiles llama.cpp (about 4 minutes on 2 cores). It is built
# once per (version, CMAKE_ARGS, Python tag, machine) into a wheel cache of the project's own,
#   ${CHAT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streaming-chat/wheels}/<key>/
# and installed from there. pip's own wheel cache is never used for it: pip keys that cache by
# sdist and ignores CMAKE_ARGS, so a wheel it once built natively would come back whatever the
# flags say. The flags come from scripts/llama-cmake-args.sh (portable unless CHAT_LLAMA_NATIVE=1)
# and are recorded in $VENV/llama-cpp-build.txt, which the build-flags test checks.
set -euo pipefail

venv="$1"
python="$2"
shift 2
reqs=("$@")
((${#reqs[@]})) || reqs=(requirements.txt)
here="$(cd "$(dirname "$0")" && pwd)"

find_wheel() { compgen -G "$1/llama_cpp_python-*.whl" | head -n1 || true; }

cmake_args="$("$here/llama-cmake-args.sh")"
cache_root="${CHAT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streaming-chat/wheels}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Split the llama-cpp-python entry (its "name==version \" line and its hash lines) off the locks.
for req in "${reqs[@]}"; do
  awk -v llama="$tmp/llama.txt" -v rest="$tmp/rest-$(basename "$req")" '
    /^llama-cpp-python==/ { inside = 1 }
    inside { print > llama; if ($0 !~ /\\$/) inside = 0; next }
    { print > rest }
  ' "$req"
done

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade "pip>=24"
for req in "${reqs[@]}"; do
  "$venv/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$tmp/rest-$(basename "$req")"
done

if [[ -s "$tmp/llama.txt" ]]; then
  version="$(sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' "$tmp/llama.txt")"
  pytag="$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  key="$(printf '%s|%s|%s|%s' "$version" "$cmake_args" "$pytag" "$(uname -m)" | sha256sum | cut -c1-16)"
  dir="$cache_root/llama-cpp-python-$version-$pytag-$key"
  wheel="$(find_wheel "$dir")"
  if [[ -z "$wheel" ]]; then
    echo "install-venv: building llama-cpp-python $version with CMAKE_ARGS=\"$cmake_args\" (a few minutes)" >&2
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$venv/bin/python" -m pip wheel --quiet --no-cache-dir --no-deps --require-hashes \
      -r "$tmp/llama.txt" -w "$tmp/wheel"
    mkdir -p "$cache_root"
    staged="$(mktemp -d "$cache_root/.staging.XXXXXX")"
    cp "$tmp"/wheel/llama_cpp_python-*.whl "$staged/"
    printf '%s\n' "$cmake_args" >"$staged/cmake-args.txt"
    # Rename into place in one step, so a build cut short never leaves a half-written cache entry.
    if ! mv -T "$staged" "$dir" 2>/dev/null; then rm -rf "$staged"; fi
    wheel="$(find_wheel "$dir")"
    [[ -n "$wheel" ]] || { echo "install-venv: no wheel in $dir after the build" >&2; exit 1; }
  else
    echo "install-venv: llama-cpp-python $version from the project's wheel cache ($dir)" >&2
  fi
  "$venv/bin/python" -m pip install --quiet --no-deps --no-index --force-reinstall "$wheel"
  printf '%s\n' "$cmake_args" >"$venv/llama-cpp-build.txt"
fi
"$venv/bin/python" -m pip check
