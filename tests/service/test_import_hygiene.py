"""The service never imports torch (or the trainer) at import time: the API starts in a second."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "ranktune.trainer")


@pytest.mark.parametrize(
    "module",
    ["ranktune.service.app", "ranktune.service.cli", "ranktune.service.server", "ranktune.service.db.leases"],
)
def test_importing_the_service_loads_no_torch(module: str) -> None:
    code = (
        f"import sys, {module}; "
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules); "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"
