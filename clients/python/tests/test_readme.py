"""The README's example, run as written against a daemon (only the URL and the key differ),
so it stays true."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from support import KEY, Daemon

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE_URL = "http://127.0.0.1:8080"


#: The repository's README, whose "From your code" section has the same program.
REPOSITORY_README = Path(__file__).resolve().parents[3] / "README.md"


def example(readme: Path = README, section: str = "## Example") -> str:
    """The first ``python`` block of the README's section ``section``."""
    text = readme.read_text()
    found = re.search(r"```python\n(.*?)```", text[text.index(section):], re.S)
    assert found, f"no python block under {section}"
    return found.group(1)


async def test_the_readme_example_runs_as_written(daemon: Daemon) -> None:
    await runs_as_written(example(), daemon)


async def test_the_repository_readme_program_runs_as_written(daemon: Daemon) -> None:
    await runs_as_written(example(REPOSITORY_README, "### From your code"), daemon)


async def runs_as_written(code: str, daemon: Daemon) -> None:
    assert EXAMPLE_URL in code
    src = Path(__file__).resolve().parents[1] / "src"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code.replace(EXAMPLE_URL, daemon.url),
        env={**os.environ, "STREAMGATE_KEY": KEY, "PYTHONPATH": str(src)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert re.fullmatch(r"stored at offset \d+", lines[0]), lines
    assert lines[1:] == ["{'greeting': 'HELLO'}"], lines
