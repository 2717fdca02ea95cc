"""`rotator status` for a renamed file's old record (contract §6.9): it says
where the credential moved, not that its file is gone."""

from __future__ import annotations

from datetime import UTC, datetime

from rotator.compliance.inventory import render_status_table, status_row
from rotator.core.state import StateRecord

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_a_renamed_files_old_record_says_where_it_moved() -> None:
    old = StateRecord.new("app", "aws.iam_access_key").model_copy(update={"moved_to": "app-renamed", "live_path": "secret/apps/app"})
    row = status_row("app", old, app=None, cred=None, now=NOW)  # type: ignore[arg-type]  # no file: app is not consulted
    assert row["moved_to"] == "app-renamed"
    line = render_status_table([row]).splitlines()[1]
    assert "moved to app-renamed" in line and "(no file)" not in line


def test_a_removed_files_record_still_says_no_file() -> None:
    removed = StateRecord.new("gone", "aws.iam_access_key")
    row = status_row("gone", removed, app=None, cred=None, now=NOW)  # type: ignore[arg-type]
    assert row["moved_to"] is None
    assert "(no file)" in render_status_table([row]).splitlines()[1]
