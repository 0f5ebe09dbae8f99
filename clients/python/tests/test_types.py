"""The package type-checks: ``mypy --strict`` on ``src/streamgate`` reports nothing (the
package ships ``py.typed``, so its users' checkers read these annotations)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_strict_is_clean() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "src/streamgate"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"mypy --strict failed:\n{done.stdout}{done.stderr}"
