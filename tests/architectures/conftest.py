"""Fixtures for architecture tests. ``small_index`` (with ``small_index.names``), ``full_index`` and the private
signature cache come from tests/conftest.py, so every test folder can use them; ``arch_cache`` stays for older tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def arch_cache(pthkit_cache_dir):
    """The session's private PTHKIT_CACHE_DIR (kept for tests written against the old fixture)."""
    return pthkit_cache_dir
