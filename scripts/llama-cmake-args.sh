#!/usr/bin/env bash
# Print the CMAKE_ARGS llama-cpp-python is built with: one portable build on every machine.
#
# llama-cpp-python compiles llama.cpp with GGML_NATIVE=ON (-march=native) when CMAKE_ARGS is
# empty. Such a binary uses whatever the build host has (AVX-512, AMX, ...) and crashes elsewhere:
# on Intel Xeons with AMX under a hypervisor it faults in ggml_backend_amx_mul_mat on the first
# decode. So the default is a fixed target:
#   x86-64:  x86-64-v3 (AVX, AVX2, FMA, F16C, BMI2), AVX-512, AVX-VNNI and AMX off;
#   aarch64 and others: llama.cpp's portable default (GGML_NATIVE=OFF).
# CHAT_LLAMA_NATIVE=1 opts in to a native build, tuned for (and only safe on) the build machine.
#
# Usage: scripts/llama-cmake-args.sh [ARCH]   (ARCH defaults to `uname -m`)
set -euo pipefail

arch="${1:-$(uname -m)}"
if [[ "${CHAT_LLAMA_NATIVE:-0}" == 1 ]]; then
  echo "-DGGML_NATIVE=ON"
  exit 0
fi
case "$arch" in
  x86_64 | amd64)
    flags=(
      -DGGML_NATIVE=OFF
      -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
      -DGGML_AVX_VNNI=OFF
      -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
    )
    ;;
  *)
    flags=(-DGGML_NATIVE=OFF)
    ;;
esac
echo "${flags[*]}"
