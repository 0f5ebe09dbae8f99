"""Fixtures: the daemon under test, started once per session on a free loopback port with a
temporary config, and stopped (SIGTERM) at the end. The package is imported from ``src``, so
the tests run without installing it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Daemon  # noqa: E402

logging.getLogger("websockets").setLevel(logging.ERROR)
logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon on the embedded broker, without rate limits."""
    d = Daemon(tmp_path_factory.mktemp("daemon"))
    d.start()
    try:
        yield d
    finally:
        d.stop()
