"""The service never imports torch (or the trainer) at import time: the API starts in a second."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["service.app", "service.cli", "service.server", "service.db.leases"])
def test_importing_the_service_loads_no_torch(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'trainer') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"
