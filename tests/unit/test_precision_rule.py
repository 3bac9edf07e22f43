"""Precision: the one rule that picks bf16 or fp32, mocked both ways, and autocast."""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import pytest
import torch

from fmnist import system
from fmnist.config import TrainConfig, flags
from fmnist.errors import ConfigError
from fmnist.system import SlowPrecisionWarning, autocast, bf16_is_fast, resolve_precision

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})  # AMD Zen 1-3
ZEN4 = AVX2_ONLY | {"avx512f", "avx512_bf16", "avx512_vnni"}
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "amx_tile", "amx_bf16", "amx_int8"}


@pytest.fixture
def cpu(monkeypatch):
    """Pretend the CPU has the given flags."""

    def set_flags(found: frozenset[str]) -> None:
        monkeypatch.setattr(system, "cpu_flags", lambda: found)

    return set_flags


@pytest.mark.parametrize(
    ("found", "auto"),
    [(AVX2_ONLY, "fp32"), (ZEN4, "bf16"), (SAPPHIRE_RAPIDS, "bf16"), (frozenset(), "fp32")],
)
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(cpu, found, auto):
    cpu(found)
    assert bf16_is_fast("cpu") is (auto == "bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto and fp32 never warn
        assert resolve_precision("auto", "cpu") == auto
        assert resolve_precision("fp32", "cpu") == "fp32"


def test_explicit_bf16_without_bf16_units_is_kept_but_warned_about(cpu):
    cpu(AVX2_ONLY)
    with pytest.warns(SlowPrecisionWarning, match=r"10-500x slower .* precision 'auto'"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    cpu(ZEN4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", "cpu") == "bf16"


def test_devices_without_a_tested_bf16_path_get_fp32(cpu):
    cpu(SAPPHIRE_RAPIDS)
    assert resolve_precision("auto", "mps") == "fp32"


def test_the_real_cpu_flags_decide():
    real = system.cpu_flags()
    if Path("/proc/cpuinfo").is_file() and platform.machine() == "x86_64":
        line = next(t for t in Path("/proc/cpuinfo").read_text().splitlines() if t[:5] == "flags")
        assert real == frozenset(line.split(":", 1)[1].split()) and "sse2" in real
    expected = "bf16" if {"amx_bf16", "avx512_bf16"} & real else "fp32"
    assert resolve_precision("auto", "cpu") == expected


def test_bad_precisions_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"precision must be auto \| fp32 \| bf16, got 'fp16'"):
        resolve_precision("fp16")
    with pytest.raises(ConfigError, match=r"TrainConfig.precision must be auto \| fp32 \| bf16"):
        TrainConfig(precision="int8")
    flag = {f.field: f for f in flags()}["precision"]
    assert flag.option == "--precision" and flag.kind == "str" and "bf16" in flag.help
    assert TrainConfig().precision == "auto"


def test_autocast_runs_the_layers_in_bf16_and_keeps_the_weights_fp32():
    layer = torch.nn.Linear(8, 4)
    x = torch.rand(2, 8)
    with autocast("bf16", "cpu"):
        y = layer(x)
    assert y.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with autocast("fp32", "cpu"):
        assert layer(x).dtype == torch.float32
