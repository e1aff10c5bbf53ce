"""Pinning OpenBLAS's kernels: where, and where not (the process-level check is in
tests/integration/core/test_numerics.py)."""

from __future__ import annotations

from pathlib import Path

from plumbline.core.numerics import PINNED_CORETYPE, cpu_flags, pin_blas_kernels

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})


def test_pins_haswell_on_an_x86_64_cpu_with_avx2_and_fma() -> None:
    env: dict[str, str] = {}
    assert pin_blas_kernels(env, "x86_64", AVX2 | {"avx512f"}) == PINNED_CORETYPE == "Haswell"
    assert env == {"OPENBLAS_CORETYPE": "Haswell"}


def test_leaves_older_cpus_other_architectures_and_the_users_choice_alone() -> None:
    for machine, flags in (("x86_64", frozenset({"sse4_2", "avx"})), ("aarch64", AVX2)):
        env: dict[str, str] = {}
        assert pin_blas_kernels(env, machine, flags) is None
        assert env == {}
    env = {"OPENBLAS_CORETYPE": "SkylakeX"}
    assert pin_blas_kernels(env, "x86_64", AVX2) == "SkylakeX"
    assert env == {"OPENBLAS_CORETYPE": "SkylakeX"}


def test_reads_the_flags_line_of_proc_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx2 fma\n\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == frozenset()
