"""Where a benchmark ran: every benchmark's JSON carries `machine()`, because speed on a CPU depends on
which vector instructions it has (AVX2 + FMA only, AVX-512, AVX512_BF16 / VNNI, AMX) and a figure
without its CPU cannot be compared with another."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# The flags that decide which kernels PyTorch, oneDNN, ONNX Runtime and OpenVINO use on x86.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU's model name and which of VECTOR_FLAGS it has, from /proc/cpuinfo (Linux)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return model, [flag for flag in VECTOR_FLAGS if flag in flags]


def machine() -> dict:
    """The CPU model and its vector flags, the cores this process may use, the load before the run, and
    the kernels torch dispatches to here (its CPU capability) when torch is imported."""
    model, flags = cpu_info()
    described = {"cpu": model, "cpu_flags": flags, "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                 "load_average_1min": round(os.getloadavg()[0], 2), "python": sys.version.split()[0]}
    if (torch := sys.modules.get("torch")) is not None:
        described.update(torch=torch.__version__, torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
                         torch_threads=torch.get_num_threads())
    return described
