"""The BLAS kernel pin: who sets it, when, and what the pipeline says when results differ."""

from __future__ import annotations

from celestial.determinism import (
    KERNEL_VARIABLE,
    REFERENCE_KERNEL,
    cpu_flags,
    differs_from_reference,
    pin_blas_kernel,
)

AVX512 = frozenset({"sse2", "avx", "avx2", "fma", "avx512f"})
AVX2 = frozenset({"sse2", "avx", "avx2", "fma"})


def test_an_avx512_cpu_gets_the_reference_kernel():
    environ: dict[str, str] = {}
    assert pin_blas_kernel(environ, AVX512)
    assert environ == {KERNEL_VARIABLE: REFERENCE_KERNEL}


def test_an_avx2_cpu_gets_the_reference_kernel_too():
    environ: dict[str, str] = {}
    assert pin_blas_kernel(environ, AVX2)
    assert environ[KERNEL_VARIABLE] == REFERENCE_KERNEL


def test_a_kernel_set_by_the_environment_is_left_as_it_is():
    environ = {KERNEL_VARIABLE: "Zen"}
    assert not pin_blas_kernel(environ, AVX512)
    assert environ == {KERNEL_VARIABLE: "Zen"}


def test_no_pin_without_avx2_and_fma_or_off_x86():
    for flags in (frozenset({"sse2", "avx"}), frozenset({"avx2"}), None):
        environ: dict[str, str] = {}
        assert not pin_blas_kernel(environ, flags)
        assert environ == {}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "fma"}
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert cpu_flags(cpuinfo) is None


def test_a_record_on_another_kernel_says_results_will_differ():
    def record(*kernels):
        return {"libraries": [{"kernel": k} for k in kernels]}

    assert differs_from_reference(record(REFERENCE_KERNEL, REFERENCE_KERNEL)) is None
    warning = differs_from_reference(record("SkylakeX"))
    assert warning and "SkylakeX" in warning and "will differ" in warning
    assert differs_from_reference(record("neoversen1"))
