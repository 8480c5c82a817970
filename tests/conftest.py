import pytest

# Helper modules and subprocess scripts live in tests/support (on sys.path through pyproject's pythonpath).
from small_mlp import batches, make_mlp  # noqa: F401  (also importable from here, as tests long did)


@pytest.fixture
def mlp():
    return make_mlp()
