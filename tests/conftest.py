"""Shared pytest setup: the `slow` marker opts in with --runslow; device from ZWFS_TEST_DEVICE."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow") or "slow" in (config.getoption("-m") or ""):
        return
    skip_slow = pytest.mark.skip(reason="slow test: use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def device() -> str:
    """Torch device of the tests marked `device`: the CPU unless ZWFS_TEST_DEVICE says
    otherwise (``ZWFS_TEST_DEVICE=cuda python3 -m pytest -q -m device`` on a GPU)."""
    name = os.environ.get("ZWFS_TEST_DEVICE", "cpu")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.fail(f"ZWFS_TEST_DEVICE={name}, but torch sees no CUDA device")
    return name
