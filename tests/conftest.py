import pytest
import torch

# Helper modules and subprocess scripts live in tests/support (on sys.path through pyproject's pythonpath).
from small_models import batches, make_mlp  # noqa: F401  (also importable from here, as tests long did)


@pytest.fixture
def mlp():
    return make_mlp()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): for modules of
    tiny models, where more threads only add overhead."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
