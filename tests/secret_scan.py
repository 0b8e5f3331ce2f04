"""A secrets scanner for the repository and for what runs write (logs, reports): Yelp's detect-secrets.

Used by `tests/unit/test_no_secrets.py` over every tracked file, and by the
integration tests over the logs and run reports their runs leave behind. A
line that must hold a secret-looking value on purpose (a test that plants one
to prove it is masked) carries `# pragma: allowlist secret`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in listed.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


def find_secrets(paths: Iterable[Path]) -> list[str]:
    """Every finding as 'path:line type'; empty when clean."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found: list[str] = []
    collection = SecretsCollection()
    with default_settings():
        for path in paths:
            collection.scan_file(str(path))
    for filename, secret in collection:
        found.append(f"{filename}:{secret.line_number} {secret.type}")
    return sorted(found)
