"""`rotator report --format html` in a real headless Chromium: real
rotations (OpenBao and moto) write the audit file the page draws."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import hvac

from debian_tool import need
from helpers import SecretLedger, run_rotator, write_credential

HOSTILE_OWNER = '<b>sec&ops</b> "team" <script>x</script>'


def _chromium(page: Path, out: Path) -> tuple[str, list[str]]:
    """One headless Chromium run: the DOM it built, its console messages, and a screenshot at `out`."""
    browser = need("chromium", "chromium", "fonts-dejavu-core")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={out.parent / 'chromium-profile'}", f"--screenshot={out}", "--window-size=1280,1400",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_the_html_report_renders_in_chromium_with_each_credential_its_timeline_and_the_chain_verified(
    rotator_env: dict[str, str], config_dir: Path, iam_admin, unique: str, bao_client: hvac.Client, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    users = [f"html-{unique}-{i}" for i in range(2)]
    for user in users:
        iam_admin.create_user(UserName=user)
    write_credential(config_dir, users[0], params={"user_name": users[0], "delete_after_deactivation": "0s"}, owner=HOSTILE_OWNER)
    write_credential(config_dir, users[1], params={"user_name": users[1]})
    audit = tmp_path / "audit.jsonl"
    env = {**rotator_env, "ROTATOR_AUDIT_FILE": str(audit)}
    outputs = []
    # users[0]: three keys (the first revoked, the second in grace then
    # revoked at once by --revoke-now); users[1]: one live key.
    for args in (["rotate", "--all"], ["rotate", users[0]], ["rotate", "--revoke-now", users[0]]):
        done = run_rotator(args, env)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs += [done.stdout, done.stderr]
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    revoked = [e["key_id"] for e in events if e["event"] == "credential.revoked" and e["credential"] == users[0]]
    assert len(revoked) == 2, [e["event"] for e in events]

    report = run_rotator(["report", "--format", "html"], env)
    assert report.returncode == 0, report.stderr
    page = tmp_path / "report.html"
    page.write_text(report.stdout)
    dom, console = _chromium(page, tmp_path / "report.png")

    assert console == [], "the page loads with no console message (no blocked fetch, no script)"
    assert (tmp_path / "report.png").stat().st_size > 10_000
    for user in users:
        assert dom.count(f"<h3>{user}</h3>") == 1 and f"<td>{user}</td>" in dom
    # The hostile owner is text, not markup: escaped in the DOM, no element made of it.
    assert html.escape(HOSTILE_OWNER, quote=False) in dom
    assert "<script>" not in dom and "<b>" not in dom
    # The chain verified intact, all its events counted.
    assert re.search(rf'class="verify ok">Intact: {len(events)} event\(s\)', dom)
    # One bar row per key: three for users[0], one for users[1]; two revocation marks.
    svgs = re.findall(r"<svg.*?</svg>", dom, flags=re.S)
    assert len(svgs) == 2
    assert [len(re.findall(r'class="keyid"', svg)) for svg in svgs] == [3, 1]
    assert len(re.findall(r": revoked \d{4}-", svgs[0])) == 2 and ": grace " in svgs[0]
    assert ": revoked" not in svgs[1] and ": live " in svgs[1]
    # No fetch anywhere: nothing in the page names a URL to load.
    assert not re.search(r'\b(src|href)=|url\(|@import', report.stdout)
    ledger = SecretLedger()
    for user in users:
        data = bao_client.secrets.kv.v2.read_secret_version(path=f"apps/{user}", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
        ledger.add(data.get("secret_access_key"))
    for text in (*outputs, report.stdout, dom):
        ledger.capture("report", text)
    ledger.assert_clean()


def test_a_tampered_chain_is_reported_broken_on_the_page(tmp_path: Path) -> None:
    """The page carries rotator.audit.verify's verdict: an edited line is named, file and line."""
    from datetime import UTC, datetime

    from rotator.audit.writer import AuditFile
    from rotator.compliance.report_html import render_html

    audit = tmp_path / "audit.jsonl"
    writer = AuditFile(audit)
    for key in ("AKIA1", "AKIA2"):
        for event in ("credential.issued", "credential.promoted"):
            writer.append({"timestamp": "2026-12-01T10:00:00Z", "level": "info", "event": event, "credential": "ci", "key_id": key})
    report = {"generated_at": datetime(2026, 12, 1, 12, tzinfo=UTC), "credentials": [], "summary": dict.fromkeys(
        ("credentials", "overdue", "failing", "unused_keys", "unmanaged_keys", "not_listable", "paused"), 0)}
    assert 'class="verify ok"' in render_html(report, audit)
    lines = audit.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace("AKIA1", "AKIA9")
    audit.write_text("".join(lines))
    page = render_html(report, audit)
    assert f'class="verify bad">BROKEN at {audit} line 2:' in page
    assert "<h3>ci</h3>" in page, "a credential only the audit file knows still gets its timeline"
