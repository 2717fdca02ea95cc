"""The process and its settings (issue 11 item 7): VAULT_SKIP_VERIFY read
as Vault reads it, a warning for plain-http Vault off loopback, core dumps
off in the commands that hold secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import parse_events, run_rotator, write_credential
from rotator.core.crashpoints import ENV, crash_env
from rotator.config.settings import Settings, parse_go_bool

GO_TRUE = ["1", "t", "T", "TRUE", "true", "True"]
GO_FALSE = ["0", "f", "F", "FALSE", "false", "False", ""]


@pytest.mark.parametrize("text", GO_TRUE + GO_FALSE)
def test_skip_verify_reads_like_go_parse_bool(text: str) -> None:
    """Exactly Go's strconv.ParseBool spellings are accepted (empty: unset)."""
    assert parse_go_bool(text, "VAULT_SKIP_VERIFY") is (text in GO_TRUE)
    assert Settings(vault_skip_verify=text).vault_skip_verify is (text in GO_TRUE)


@pytest.mark.parametrize("text", ["yes", "no", "on", "off", "tRUE", " true", "2", "y"])
def test_other_skip_verify_spellings_are_an_error(config_dir: Path, text: str) -> None:
    """`yes`, `on`, `2`...: Vault's tools reject them, so does the rotator (exit 2 naming the variable, not silently on or off)."""
    if text not in {"yes", "tRUE"}:  # one CLI run for two spellings is enough; the rest in-process
        with pytest.raises(ValueError, match="VAULT_SKIP_VERIFY must be one of"):
            parse_go_bool(text, "VAULT_SKIP_VERIFY")
        return
    result = run_rotator(["validate", "--config-dir", str(config_dir)], {"VAULT_SKIP_VERIFY": text})
    assert result.returncode == 2
    assert "environment: VAULT_SKIP_VERIFY: VAULT_SKIP_VERIFY must be one of 1, t, T, TRUE, true, True" in result.stderr


def test_plain_http_vault_off_loopback_is_warned(config_dir: Path) -> None:
    """`rotator rotate` with an http:// VAULT_ADDR off loopback warns vault.plain_http first; loopback does not."""
    write_credential(config_dir, "ci", params={"user_name": "ci"})
    env = {"ROTATOR_CONFIG_DIR": str(config_dir), "VAULT_TOKEN": "not-a-real-token", "ROTATOR_LOG_FORMAT": "json"}
    # An unknown NAME stops `rotate` (exit 2) after the warning and before any connection: no packet leaves the host.
    remote = run_rotator(["rotate", "no-such-credential"], {**env, "VAULT_ADDR": "http://vault.example.com:8200"})
    events = parse_events(remote.stdout)
    assert remote.returncode == 2
    assert [e["event"] for e in events] == ["vault.plain_http", "rotate.unknown_credential"], events
    local = run_rotator(["rotate", "no-such-credential"], {**env, "VAULT_ADDR": "http://127.0.0.1:9"})
    assert [e["event"] for e in parse_events(local.stdout)] == ["rotate.unknown_credential"]
    assert Settings(vault_addr="https://vault.example.com").is_vault_plain_http_remote() is False
    assert Settings(vault_addr="http://[::1]:8200").is_vault_plain_http_remote() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_DUMPABLE is Linux's")
def test_run_and_rotate_turn_core_dumps_off(tmp_path: Path) -> None:
    """After the command's start-up, RLIMIT_CORE is 0/0 and the process is not dumpable (checked in that very process)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import resource, sys\n"
        "from rotator.cli import _configure_logging\n"
        "from rotator.daemon.hardening import is_dumpable\n"
        "from rotator.config.settings import Settings\n"
        "before = (resource.getrlimit(resource.RLIMIT_CORE), is_dumpable())\n"
        "_configure_logging(Settings(log_format='json'))\n"
        "after = (resource.getrlimit(resource.RLIMIT_CORE), is_dumpable())\n"
        "print(repr((before, after)), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_"))}
    done = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    before, after = eval(done.stderr.strip().splitlines()[-1])  # noqa: S307 - our own repr of two tuples
    assert before[1] is True  # so the check below can fail
    assert after == ((0, 0), False)


def test_fault_hooks_act_only_in_test_mode(aws_world) -> None:  # type: ignore[no-untyped-def]
    """ROTATOR_TEST_CRASH_AT alone is ignored (with a warning) and the rotation completes; with ROTATOR_TEST_MODE=1 it kills."""
    w = aws_world
    code, events = w.cli("rotate", w.name, extra_env={ENV: "after-intent"})
    assert code == 0, [e["event"] for e in events]
    assert [e["variable"] for e in events if e["event"] == "process.test_hook_ignored"] == [ENV]
    assert "rotation.completed" in [e["event"] for e in events]
    code, _ = w.cli("rotate", w.name, extra_env=crash_env("after-intent"))
    assert code == -9, "with test mode the hook acts"


def test_the_unit_turns_core_dumps_off() -> None:
    """systemd/rotator.service sets LimitCORE=0 (test_deploy_files checks its exposure score stays at most 2.0)."""
    unit = (Path(__file__).resolve().parent.parent / "systemd" / "rotator.service").read_text()
    assert "\nLimitCORE=0\n" in unit
