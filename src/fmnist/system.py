"""Facts about the machine and the software, recorded with every result."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterator
from functools import cache
from typing import Any

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")  # what TrainConfig.precision and Classifier take
# CPU units that make bf16 fast: with either, oneDNN runs convolutions and matrix products
# in bf16 (Intel Sapphire Rapids and later: AMX; AMD Zen 4, Intel Cooper Lake: AVX512-BF16).
# Without them bf16 convolutions bypass oneDNN and run 10-500x slower than fp32.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


class SlowPrecisionWarning(UserWarning):
    """bf16 was asked for on hardware that has no fast bf16 units."""


@cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; True when it agreed.

    A training step allocates and frees the same few MB of activations every time. By
    default glibc returns such blocks to the kernel (mmap/munmap, heap trimming), and every
    step then pays page faults for fresh pages: measured on 2 EPYC cores, 0.69 M faults and
    a third of the CPU time in the kernel for 3,000 seed-CNN steps; with this, 0.065 M and
    1.5x the throughput at batch 32. A no-op outside glibc (macOS, Windows, musl).
    """
    import ctypes
    import ctypes.util

    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from <malloc.h>
    return all(
        libc.mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 32 << 20),  # blocks under 32 MB come from the heap...
            (m_trim_threshold, 1 << 30),  # ...which is not trimmed below 1 GB free...
            (m_top_pad, 64 << 20),  # ...and grows 64 MB at a time
        )
    )


@contextlib.contextmanager
def torch_settings(threads: int | None = None, deterministic: bool = False) -> Iterator[None]:
    """The one place that changes torch's process-wide settings; the caller's come back.

    ``threads`` sets torch's intra-op threads (None or 0: leave them; at most 4 per core, with
    a warning). ``deterministic``
    turns on deterministic algorithms (same seed, config and machine -> identical runs; on
    CUDA some kernels still vary) without filling every new tensor with NaN first (a
    deterministic-mode default that cost 38 fill_ calls per step, 6 % of the seed CNN's
    time: no op here reads memory it has not written). glibc is also asked to keep freed
    memory (:func:`keep_freed_memory`), which lasts for the process.
    """
    import torch

    keep_freed_memory()
    det = torch.utils.deterministic
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             det.fill_uninitialized_memory)  # fmt: skip
    if threads:
        cap = 4 * (os.cpu_count() or 1)  # a config from a bigger machine still runs here
        if threads > cap:
            warnings.warn(
                f"{threads} threads asked on {os.cpu_count()} cores: using {cap}; more "
                "threads than cores only wait on each other.",
                stacklevel=3,
            )
        torch.set_num_threads(min(threads, cap))
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        if torch.get_num_threads() != saved[0]:
            torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        det.fill_uninitialized_memory = saved[3]


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo names them (avx2, avx512_bf16, amx_bf16...).

    Read from /proc/cpuinfo (Linux); elsewhere from the cpuinfo library inside torch (the
    same names); empty when neither answers.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86, then ARM's spelling
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        import torch

        found = torch._C._cpu._get_cpu_capability()  # private; guarded below
        return frozenset(k for k, v in found.items() if v is True)
    except (ImportError, AttributeError, RuntimeError):
        return frozenset()


def bf16_is_fast(device: Any = "cpu") -> bool:
    """True where bf16 autocast beats fp32: CPUs with AMX or AVX512-BF16, CUDA GPUs with bf16."""
    import torch

    kind = torch.device(device).type
    if kind == "cpu":
        return bool(BF16_CPU_FLAGS & cpu_flags())
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return False  # MPS and others: fp32, the tested path


def resolve_precision(precision: str, device: Any = "cpu") -> str:
    """The precision to compute in on ``device``: 'fp32' or 'bf16' ('auto': bf16 where fast).

    An explicit 'bf16' where :func:`bf16_is_fast` says no is kept but warned about.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be {' | '.join(PRECISIONS)}, got {precision!r}; 'auto' picks "
            "bf16 where the hardware has fast bf16 units and fp32 elsewhere."
        )
    fast = bf16_is_fast(device)
    if precision == "auto":
        return "bf16" if fast else "fp32"
    if precision == "bf16" and not fast:
        warnings.warn(
            f"precision bf16 on {device} without fast bf16 units (CPU flags amx_bf16 or "
            "avx512_bf16, or a CUDA GPU with bf16): expect it to run 10-500x slower than "
            "fp32. Use precision 'auto' (or --precision auto) to get fp32 here.",
            SlowPrecisionWarning,
            stacklevel=2,
        )
    return precision


def autocast(precision: str, device: Any = "cpu") -> Any:
    """torch.autocast to bf16 for a resolved ``precision`` of 'bf16'; for 'fp32' a no-op.

    Weights, gradients, optimizer state and reductions stay fp32: autocast only runs the
    convolutions and matrix products in bf16.
    """
    import torch

    on = precision == "bf16"
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=on)


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


def git_commit(exclude: str | None = None) -> str | None:
    """Return the short commit of the working tree, with '+dirty' when it has changes, not
    counting those under ``exclude`` (a folder, from the repository's top)."""

    def git(*args: str, check: bool = False) -> str:
        done = subprocess.run(["git", *args], cwd=os.path.dirname(__file__),
                              capture_output=True, text=True, timeout=5, check=check)  # fmt: skip
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD", check=True)
        where = ("--", ":/", f":(exclude,top){exclude}") if exclude else ()
        dirty = git("status", "--porcelain", "--untracked-files=no", *where)
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
