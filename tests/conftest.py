"""What several test modules share.

`make test` runs pytest on both cores (`pytest -n 2 --dist loadgroup`, pytest-xdist): tests go to two worker processes
one at a time, except that a module whose tests share an expensive module-scoped fixture keeps them in one worker
(`pytestmark = pytest.mark.xdist_group(...)`), so that fixture is built once. Caches that tests of several modules fill
and read (the report notebooks' arm cache) live in `shared_dir`, one folder for the whole run: the arm cache's file
locks make two workers asking for the same arm train it once.
"""
import os

import pytest


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory):
    "A folder of this test run shared by every pytest-xdist worker (without xdist: the session's temporary root)."
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
