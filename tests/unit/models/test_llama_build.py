"""The llama.cpp build is the portable one the project promises, not one tuned for this CPU.

A native build (-march=native) runs on the machine that built it and may crash elsewhere: on
Intel Xeons with AMX under a hypervisor it faults in ggml_backend_amx_mul_mat on the first
decode. The developers' and CI's AMD machine never shows that crash, so this test checks the
instruction sets the installed build uses, which it can see on any machine.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CMAKE_ARGS = ROOT / "scripts" / "llama-cmake-args.sh"
# x86-64-v3, what every x86-64 machine of the last ten years runs.
X86_REQUIRED = ("AVX", "AVX2", "FMA", "F16C", "BMI2")
# Anything a native build on a newer CPU turns on: the AMX kernels are the ones that crash.
X86_FORBIDDEN = re.compile(r"AVX512|AMX|AVX_VNNI|AVX_BF16")


def cmake_args(arch: str, **env: str) -> str:
    result = subprocess.run(
        ["bash", str(CMAKE_ARGS), arch],
        env={**os.environ, "CHAT_LLAMA_NATIVE": "0", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return result.stdout.strip()


def system_info() -> str:
    """``llama_print_system_info()`` of the installed build, read in a child process."""
    script = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def x86_portability_problems(info: str) -> list[str]:
    """What in a system-info line breaks the x86-64-v3 promise; empty when nothing does."""
    # "CPU : SSE3 = 1 | AVX = 1 | ... | AVX512 = 1 | ..." (the features the build uses)
    flags = {name: value == "1" for name, value in re.findall(r"([A-Z0-9_]+) = (\d)", info)}
    problems = [f"lacks {name}" for name in X86_REQUIRED if not flags.get(name)]
    problems += [
        f"uses {name}" for name, on in sorted(flags.items()) if on and X86_FORBIDDEN.search(name)
    ]
    return problems


PORTABLE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
# What a native build prints on a Sapphire Rapids Xeon (the machine that crashed).
NATIVE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)


class TestPortabilityCheck:
    def test_when_portable_build_then_no_problem(self) -> None:
        assert x86_portability_problems(PORTABLE_INFO) == []

    def test_when_native_build_with_amx_then_named(self) -> None:
        problems = x86_portability_problems(NATIVE_INFO)
        assert "uses AMX_INT8" in problems
        assert "uses AVX512" in problems

    def test_when_older_than_v3_then_missing_named(self) -> None:
        assert x86_portability_problems("CPU : SSE3 = 1 | AVX = 1 |") == [
            "lacks AVX2",
            "lacks FMA",
            "lacks F16C",
            "lacks BMI2",
        ]


class TestCmakeArgs:
    def test_when_x86_64_then_v3_flags_without_native_avx512_or_amx(self) -> None:
        flags = cmake_args("x86_64").split()
        assert "-DGGML_NATIVE=OFF" in flags
        for name in X86_REQUIRED:
            assert f"-DGGML_{name}=ON" in flags
        for name in ("AVX512", "AMX_TILE", "AMX_INT8", "AMX_BF16", "AVX_VNNI"):
            assert f"-DGGML_{name}=OFF" in flags

    def test_when_aarch64_then_llama_cpps_portable_default(self) -> None:
        assert cmake_args("aarch64") == "-DGGML_NATIVE=OFF"

    def test_when_operator_opts_in_then_native(self) -> None:
        assert cmake_args("x86_64", CHAT_LLAMA_NATIVE="1") == "-DGGML_NATIVE=ON"


def test_installed_build_when_checked_then_uses_only_the_promised_instruction_sets() -> None:
    pytest.importorskip("llama_cpp")
    recorded = Path(sys.prefix, "llama-cpp-build.txt")
    if recorded.exists() and "GGML_NATIVE=ON" in recorded.read_text():
        pytest.skip("CHAT_LLAMA_NATIVE=1: a native build, tuned for this machine on purpose")
    info = system_info()
    assert " = " in info, f"llama_print_system_info() named no instruction sets: {info!r}"
    if platform.machine() not in {"x86_64", "AMD64"}:
        return
    problems = x86_portability_problems(info)
    assert not problems, (
        f"the llama.cpp build {', '.join(problems)}: not the portable x86-64-v3 build, so it may "
        "crash on other CPUs (rebuild: make clean && make test; pip's wheel cache ignores "
        f"CMAKE_ARGS). System info: {info.strip()}"
    )


def test_installed_build_when_recorded_then_built_with_todays_flags() -> None:
    pytest.importorskip("llama_cpp")
    recorded = Path(sys.prefix, "llama-cpp-build.txt")
    if not recorded.exists():
        pytest.skip("llama-cpp-python was not installed by scripts/install-venv.sh")
    native = "GGML_NATIVE=ON" in recorded.read_text()
    expected = cmake_args(platform.machine(), CHAT_LLAMA_NATIVE="1" if native else "0")
    assert recorded.read_text().strip() == expected
