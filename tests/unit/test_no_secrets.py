"""No secret in the repository: detect-secrets over every tracked file (part of `make test`)."""

from __future__ import annotations

from pathlib import Path

from tests.secret_scan import find_secrets, tracked_files


def test_no_tracked_file_holds_a_secret():
    files = tracked_files()
    assert len(files) > 50
    assert find_secrets(files) == []


def test_the_scanner_finds_a_planted_secret(tmp_path: Path):
    """Proves the scan above would fail: the same scanner flags an AWS key and a password in a URL."""
    planted = tmp_path / "settings.py"
    planted.write_text('AWS_ACCESS_KEY_ID = "AKIAZ3MJQ7EXAMPLE7QA"\n'  # pragma: allowlist secret
                       'DB = "postgresql://ratchet:hunter2-but-longer@db:5432/airflow"\n')  # pragma: allowlist secret
    found = find_secrets([planted])
    assert any("AWS Access Key" in f for f in found), found
    assert any("Basic Auth" in f for f in found), found
