"""Repository-wide test settings.

The tests train tiny networks; torch's intra-op threads only add overhead there, and on a shared,
busy CPU they spin against other processes and make these tests 10-50x slower. One thread each.
"""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
