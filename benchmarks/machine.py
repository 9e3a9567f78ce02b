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


def fp32_flop_limit(cpuinfo: str | None = None) -> dict:
    """The cores' fp32 peak: the larger of what a large fp32 matrix product reaches here (`gemm_gflop_per_s`,
    torch's GEMM: the practical limit) and cores x clock x FLOP per cycle (`nominal_gflop_per_s`). Two FMA pipes of 8 fp32 lanes make 32 FLOP per
    cycle on AVX2 CPUs and on AMD's AVX-512 ones (Zen 4 runs 512-bit operations on 256-bit pipes); Intel's
    AVX-512 server cores have two 512-bit FMA pipes, 64 FLOP per cycle (some SKUs have one: then the limit
    here is twice too high). The clock is /proc/cpuinfo's, which in a VM is often the base clock: turbo makes a
real loop beat that, hence the measured GEMM."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    _, flags = cpu_info(cpuinfo)
    mhz = [float(value) for key, _, value in (line.partition(":") for line in cpuinfo.splitlines()) if key.strip() == "cpu MHz"]
    intel = "GenuineIntel" in cpuinfo
    per_cycle = 64 if intel and "avx512f" in flags else 32 if "fma" in flags else 16
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ghz = max(mhz) / 1000 if mhz else float("nan")
    nominal, gemm = cores * ghz * per_cycle, gemm_gflop_per_s()
    return {"gflop_per_s": round(max(nominal, gemm), 1), "gemm_gflop_per_s": round(gemm, 1),
            "nominal_gflop_per_s": round(nominal, 1), "cores": cores, "ghz": round(ghz, 3), "fp32_flop_per_cycle": per_cycle}


def gemm_gflop_per_s(size: int = 2048, seconds: float = 1.0, rounds: int = 3) -> float:
    """fp32 GFLOP per second of torch's matrix product of two size x size matrices, the best of `rounds`."""
    import time

    import torch

    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(rounds):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            done += 1
        best = max(best, done * 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best
