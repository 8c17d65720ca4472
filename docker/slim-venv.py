"""Trim what the runtime never uses from the built venv (run in the Dockerfile's builder stage).

llama-cpp-python's wheel installs, besides ``llama_cpp/lib/*.so`` (what it loads at run time),
a second copy of every shared library plus C headers and CMake/pkg-config files at the top of
site-packages (``lib/``, ``include/``), meant for linking against llama.cpp. Zip wheels also turn
the ``libX.so -> libX.so.0 -> libX.so.0.25.3`` symlink chains into three full copies. Together that
is ~40 MB of dead weight in the image. This removes the top-level copies (only files that the
llama-cpp-python RECORD lists) and turns identical copies inside ``llama_cpp/lib`` back into
symlinks. Nothing else is touched.

Usage: python slim-venv.py /opt/venv
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import sysconfig
from pathlib import Path


def site_packages(venv: Path) -> Path:
    rel = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return venv / rel


def drop_link_time_files(sp: Path) -> int:
    """Delete llama-cpp-python's top-level lib/ and include/ files (not its package dir)."""
    records = list(sp.glob("llama_cpp_python-*.dist-info/RECORD"))
    if not records:
        return 0
    freed = 0
    dirs: set[Path] = set()
    with records[0].open(newline="") as fh:
        for row in csv.reader(fh):
            rel = Path(row[0])
            if not rel.parts or rel.parts[0] not in {"lib", "include"}:
                continue
            path = sp / rel
            if path.is_file() or path.is_symlink():
                freed += path.lstat().st_size
                path.unlink()
                dirs.update(path.parents)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        if d != sp and sp in d.parents and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return freed


def dedupe_shared_libs(libdir: Path) -> int:
    """Replace byte-identical copies (libX.so, libX.so.0) with symlinks to the longest name."""
    if not libdir.is_dir():
        return 0
    groups: dict[str, list[Path]] = {}
    for path in libdir.iterdir():
        if path.is_file() and not path.is_symlink() and ".so" in path.name:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            groups.setdefault(digest, []).append(path)
    freed = 0
    for paths in groups.values():
        if len(paths) < 2:
            continue
        keep = max(paths, key=lambda p: (len(p.name), p.name))
        for path in paths:
            if path != keep:
                freed += path.stat().st_size
                path.unlink()
                os.symlink(keep.name, path)
    return freed


def main(venv: str) -> None:
    sp = site_packages(Path(venv))
    freed = drop_link_time_files(sp) + dedupe_shared_libs(sp / "llama_cpp" / "lib")
    print(f"slim-venv: freed {freed / 1e6:.1f} MB in {sp}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/opt/venv")
