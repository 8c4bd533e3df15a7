"""The machine the numbers depend on: CPU model and flags, cores, memory, versions, negmine's
kernels, the BLAS libraries loaded and the kernels they chose, the thread caps, and the
``OPENBLAS_*`` settings that would make OpenBLAS run other kernels than users get."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from negmine import _core
from negmine.bench.settings import BLAS_ENV, GIB, PEERS


def blas_env_warning(rerun: str) -> list[str]:
    """The ``OPENBLAS_*`` settings that make numpy/faiss run other kernels than OpenBLAS picks
    for this CPU, with a warning on stderr: the numbers would not describe them as shipped."""
    found = [f"{v}={os.environ[v]}" for v in BLAS_ENV if v in os.environ]
    if found:
        print(
            f"WARNING: {', '.join(found)} is set: numpy/faiss BLAS is not benchmarked as "
            f"shipped. Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE {rerun}",
            file=sys.stderr,
        )
    return found


def limit_threads(threads: int) -> Any:
    """Caps every BLAS/OpenMP pool in the process (numpy's and faiss' OpenBLAS, libgomp); the
    limiter to restore, or None without threadpoolctl (with a warning)."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        print(
            "WARNING: threadpoolctl missing (pip install threadpoolctl): numpy's BLAS runs with "
            "its default thread count",
            file=sys.stderr,
        )
        return None
    return threadpool_limits(limits=threads)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def negmine_kernels() -> str:
    """The instruction set negmine's kernels run on here: the fastest of ``cpu_features()``
    (``avx512vnni`` is not one: it marks the int8 pre-scoring path)."""
    return [f for f in _core.cpu_features() if f != "avx512vnni"][-1]


def machine_info(peers: dict[str, Any], env_warnings: list[str]) -> dict[str, Any]:
    """What the numbers depend on: CPU model and flags, cores, RAM, versions, kernels, BLAS."""
    found = _cpuinfo()
    cpu, flags = found if found is not None else (platform.processor() or "unknown", set[str]())
    versions = {"numpy": np.__version__, "negmine": _core.__version__}
    for name, module in peers.items():
        versions[name] = _version(PEERS[name], module)
    return {
        "cpu": cpu,
        "flags": [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni") if f in flags],
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "ram_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB,
        "python": platform.python_version(),
        "versions": versions,
        "cpu_features": _core.cpu_features(),
        "kernels": negmine_kernels(),
        "blas": blas_info(),
        "env_warnings": env_warnings,
    }


def machine_lines(info: dict[str, Any]) -> list[str]:
    """``machine_info`` as the markdown bullet list both reports print."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"- CPU: {info['cpu']}, {info['cores']} logical cores ({info['usable_cores']} usable), "
        f"{info['ram_gib']:.0f} GiB RAM; flags: {' '.join(info['flags']) or 'n/a'}",
        f"- Python {info['python']}; {versions}",
        f"- negmine.cpu_features(): {', '.join(info['cpu_features'])} (kernels: {info['kernels']})",
    ]
    if info["blas"]:
        lines.append(f"- BLAS: {'; '.join(info['blas'])}")
    if info["env_warnings"]:
        lines.append(f"- **WARNING: {', '.join(info['env_warnings'])} was set during this run**")
    return lines


def _version(package: str, module: Any) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "?"))


def _loaded_blas() -> list[tuple[str, dict[str, Any]]]:
    """threadpoolctl's record of each BLAS library loaded in the process, with the package that
    ships it (``numpy``, ``faiss_cpu``, ``scipy``...); empty without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        (Path(lib["filepath"]).parent.name.replace(".libs", ""), lib)
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]


def blas_libraries() -> dict[str, dict[str, Any]]:
    """threadpoolctl's record of each BLAS library loaded in the process, by the package that
    ships it (``numpy``, ``faiss_cpu``, ``scipy``...); empty without threadpoolctl."""
    return dict(_loaded_blas())


def blas_label(lib: dict[str, Any] | None) -> str:
    """``"openblas 0.3.15, SkylakeX kernels"``: a BLAS library and the kernels it runs."""
    if lib is None:
        return "BLAS unknown (pip install threadpoolctl)"
    return f"{lib['internal_api']} {lib.get('version')}, {lib.get('architecture')} kernels"


def torch_blas(torch: Any) -> str:
    """The BLAS torch was built with and the CPU capability its kernels dispatch to
    (threadpoolctl does not see torch's statically linked MKL)."""
    shown = torch.__config__.show()
    found = next(
        (p.split("=", 1)[1] for p in shown.replace(",", " ").split() if "BLAS_INFO=" in p), "?"
    )
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "?")()
    return f"{found}, {capability} kernels"


def openblas_core(flags: set[str] | None = None) -> str | None:
    """The ``OPENBLAS_CORETYPE`` whose kernels suit this CPU: ``SkylakeX`` with AVX-512,
    ``Haswell`` with AVX2 and FMA, ``None`` otherwise (or off x86)."""
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def cpu_flags() -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo; empty where there is none."""
    found = _cpuinfo()
    return set() if found is None else found[1]


def _cpuinfo() -> tuple[str, set[str]] | None:
    """The first CPU's model name (``"unknown"`` without one) and flags in /proc/cpuinfo; None
    where it cannot be read."""
    cpu, flags = "unknown", set[str]()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "unknown":
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return cpu, flags


def blas_info() -> list[str]:
    """Each BLAS library loaded in the process, with the kernels OpenBLAS chose (threadpoolctl's
    ``architecture``) and its thread count; empty without threadpoolctl."""
    return [
        f"{owner}: {lib['internal_api']} {lib.get('version')} "
        f"({lib.get('architecture')} kernels, {lib['num_threads']} threads)"
        for owner, lib in _loaded_blas()
    ]
