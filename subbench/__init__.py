"""subbench: a benchmark harness for subliminal learning."""

__version__ = "0.1.0"

from subbench.hookspecs import hookimpl  # noqa: E402  (the one name plugins import)

__all__ = ["__version__", "hookimpl"]
