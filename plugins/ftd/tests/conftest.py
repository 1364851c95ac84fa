"""The toy tests run single-threaded: on a shared, busy CPU, torch's intra-op threads spin against
other processes and make these tiny networks 10-50x slower.

``toy_buffer`` is rebuilt here (single-threaded, well under a second) instead of taken from
ddtoolbox.testing, so these tests are fast whichever test builds the session's first buffer.
"""

import pytest
import torch

from ddtoolbox.testing import TOY_BUFFER, run_cli


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_buffer(toy_dataset, tmp_path_factory) -> str:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("toy-buffer-ftd")
        result = run_cli("buffer", "--dataset", toy_dataset, "--out", out, *TOY_BUFFER)
        assert result.code == 0, result.err
    finally:
        torch.set_num_threads(before)
    return str(out)
