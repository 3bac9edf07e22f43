"""Facts about the machine and the software, recorded with every result."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from functools import cache


@cache
def cpu_name() -> str:
    """Return the CPU model name, e.g. 'AMD EPYC 7B13'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def _cpu_details() -> str:
    """' (family 26 model 2, AVX-512)': tells CPUs apart that share a marketing name."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return ""
    flags = fields.get("flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    parts = [f"family {fields['cpu family']} model {fields['model']}"] if "model" in fields else []
    return f" ({', '.join([*parts, *([isa] if isa else [])])})" if parts or isa else ""


def hardware(device: str = "cpu") -> str:
    """Return a one-line hardware description for result tables."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cores} x {cpu_name()}{_cpu_details()}"
    if device.startswith("cuda"):
        import torch

        text += f", {torch.cuda.get_device_name()}"
    return text


def versions() -> dict[str, str]:
    """Return the versions of Python and the key libraries that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("fmnist", "torch", "numpy", "safetensors", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def git_commit() -> str | None:
    """Return the short commit of the working tree, with '+dirty' when it has changes."""
    try:
        here = os.path.dirname(__file__)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
