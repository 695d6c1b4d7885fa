"""subbench: a benchmark harness for subliminal learning."""

__version__ = "0.1.0"

from subbench.reproducibility import pin as _pin_cpu_kernels  # noqa: E402

_pin_cpu_kernels()  # before torch is imported anywhere: the same CPU kernels on every x86-64 machine

from subbench.hookspecs import hookimpl  # noqa: E402  (the one name plugins import)

__all__ = ["__version__", "hookimpl"]
