import os

import pytest

# Tests never load installed third-party plugins by accident.
os.environ.setdefault("SUBBENCH_LOAD_PLUGINS", "")
os.environ.setdefault("SUBBENCH_THREADS", "1")
# Runs stay in process unless a test asks for workers (tests/test_executor.py): faster and easier to debug.
os.environ.setdefault("SUBBENCH_JOBS", "1")


@pytest.fixture
def pm():
    """The process-wide plugin manager (built-ins loaded)."""
    from subbench.plugins import get_manager

    return get_manager()
