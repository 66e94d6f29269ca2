import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MONKEYANIM_SHARED", ROOT.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "original-monkeynet"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    assert FIXTURE.is_dir(), f"the parity fixture is expected at {FIXTURE} (../shared beside the clone)"
    return FIXTURE


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    path = SHARED / "datasets"
    assert path.is_dir(), f"the shared datasets are expected at {path}"
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    """Run the real console entry point in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, "MONKEYANIM_DEBUG": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "monkeyanim", *map(str, args)], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=600)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
