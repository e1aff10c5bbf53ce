"""The same floating-point kernels on every x86-64 machine, so a clean clone reproduces dvc.lock.

numpy and scipy bundle OpenBLAS, which picks its kernels by CPU when it loads. The AVX-512
kernels accumulate in a different order than the AVX2 ones, so a model fitted with L-BFGS on
an AVX-512 machine differs from one fitted on an AVX2 machine in its last bits: enough to give
``models/model.skops`` another hash, and the committed ``dvc.lock`` would only reproduce on the
kind of CPU it was made on. Every x86-64 CPU with AVX2 and FMA (Intel since 2013, AMD since
2015) runs OpenBLAS's Haswell kernels, so those are pinned there. Older CPUs and other
architectures keep OpenBLAS's own choice, and a user's own ``OPENBLAS_CORETYPE`` always wins.

It only works before OpenBLAS loads, which is why ``plumbline/__init__.py`` calls it first.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

PINNED_CORETYPE = "Haswell"
_NEEDED_FLAGS = frozenset({"avx2", "fma"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's feature flags (Linux), or none where the kernel does not list them."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def pin_blas_kernels(
    environ: MutableMapping[str, str] | None = None,
    machine: str | None = None,
    flags: frozenset[str] | None = None,
) -> str | None:
    """Set ``OPENBLAS_CORETYPE`` where that makes results machine-independent; return it."""
    env = os.environ if environ is None else environ
    if "OPENBLAS_CORETYPE" in env:
        return env["OPENBLAS_CORETYPE"]
    arch = (machine if machine is not None else platform.machine()).lower()
    if arch not in ("x86_64", "amd64"):
        return None
    if not _NEEDED_FLAGS.issubset(cpu_flags() if flags is None else flags):
        return None
    env["OPENBLAS_CORETYPE"] = PINNED_CORETYPE
    return PINNED_CORETYPE
