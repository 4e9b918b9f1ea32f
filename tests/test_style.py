"""Style the reader relies on: lines of at most 110 characters and no unused or undefined names
(ruff, configured in pyproject.toml), checked in the default suite so CI keeps it."""
import shutil
import subprocess

import pytest

from conftest import ROOT


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e .[dev] installs it)")
    proc = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
