"""examples/object_options.py really runs (docs/object-options.md includes it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "object_options.py"


def test_the_object_options_example_runs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_CLOUD_"))}
    env["PYTHONWARNINGS"] = "error"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=50
    )
    assert proc.returncode == 0, proc.stderr
    assert "uploaded oss://example-bucket/reports/report.csv: 3145728 bytes" in proc.stdout
    assert "second upload refused: 409 FileAlreadyExists" in proc.stdout
    for line in (
        "content-type: text/csv",
        "x-oss-meta-owner: data-team",
        "x-oss-storage-class: IA",
        "x-oss-object-acl: private",
        "x-oss-server-side-encryption: AES256",
        "x-oss-tagging: project=reports&retention=90%20days",
    ):
        assert f"  {line}\n" in proc.stdout
