"""Credential files written to hurt: each is refused by the real
`python -m rotator validate` with exit 2, a problem line naming the file,
no traceback, no value echoed, and the other files still checked
(contract §4, §6.7, §6.11; issue 11 item 5)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_rotator, write_credential

HEAD = "provider: aws.iam_access_key\nowner: platform-team\nschedule: {every: 30d}\ngrace: 1h\nvault: {path: apps/hostile}\n"
# A literal RSA private key body (made up for the test, never a real key).
KEY_BODY = "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u"
PRIVATE_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----\n"


def alias_bomb() -> str:
    """About 800 bytes that expand to 2**24 strings if aliases are followed."""
    lines = ['l0: &l0 ["lol","lol"]'] + [f"l{i}: &l{i} [*l{i - 1},*l{i - 1}]" for i in range(1, 25)]
    return HEAD + "params:\n  user_name: x\n  " + "\n  ".join(lines) + "\n"


def nested(depth: int) -> str:
    return HEAD + "params: " + "{a: " * depth + "1" + "}" * depth + "\n"


def validate(config_dir: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    # A generous timeout: the bomb took minutes before the fix; the assertion is on behaviour.
    result = run_rotator(["validate", "--config-dir", str(config_dir)], {}, timeout=60)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    return result.returncode, output, elapsed


def with_a_neighbour(config_dir: Path) -> Path:
    """A second, broken-in-an-ordinary-way file, to show the others go on."""
    return write_credential(config_dir, "neighbour", params={"user_name": "n", "colour": "blue"})


HOSTILE = {
    "alias-bomb": (alias_bomb(), "YAML anchors (&name) are not allowed"),
    "one-mib": (HEAD + "params: {user_name: x}\ndescription: " + "x" * (1 << 20) + "\n", "a file may be at most 65536 bytes"),
    "deep-lists": (HEAD + "params: " + "[" * 1000 + "]" * 1000 + "\n", "nest"),
    "deep-maps": (nested(1000), "nested deeper than 32 levels"),
    "deep-245": (nested(245), "nested deeper than 32 levels"),
    "undefined-alias": (HEAD + "params:\n  user_name: x\nextra: *nothing\n", "YAML aliases (*name) are not allowed"),
    "anchor": (HEAD + "base: &b {user_name: x}\nparams: *b\n", "YAML anchors"),
    "merge-key": (HEAD + "params:\n  <<: {user_name: x}\n", "YAML merge keys (<<) are not allowed"),
    "python-tag": (HEAD + "params: !!python/object:os.system {user_name: x}\n", "YAML tags"),
    "binary-tag": (HEAD + "params: {user_name: !!binary aGVsbG8=}\n", "YAML tags"),
}


def test_hostile_yaml_is_refused_file_by_file(config_dir: Path) -> None:
    """Each hostile file is one problem line naming it, exit 2, no traceback, and every other file is still checked."""
    for stem, (content, _) in HOSTILE.items():
        (config_dir / f"{stem}.yaml").write_text(content)
    neighbour = with_a_neighbour(config_dir)
    code, output, elapsed = validate(config_dir)
    assert code == 2
    lines = output.splitlines()
    for stem, (_, message) in HOSTILE.items():
        mine = [line for line in lines if line.startswith(f"{config_dir / stem}.yaml: ")]
        assert len(mine) == 1 and mine[0].startswith(f"{config_dir / stem}.yaml: <file>: ") and message in mine[0], (stem, lines)
    assert f"{neighbour}: params.colour: unknown key" in lines
    print(f"validate on {len(HOSTILE) + 1} files: {elapsed:.2f}s wall, interpreter start included")


def test_a_literal_private_key_is_never_echoed(config_dir: Path) -> None:
    """A private key pasted where a Vault reference belongs is named as such, and no part of it is printed."""
    file = config_dir / "pasted.yaml"
    file.write_text(
        "provider: github.app_installation_token\nowner: platform-team\nschedule: {every: 1h}\ngrace: 10m\n"
        "vault: {path: apps/pasted}\nparams:\n  app_id: 1\n  installation_id: 2\n  private_key: |\n"
        + "".join(f"    {line}\n" for line in PRIVATE_KEY.splitlines())
        + "  api_url: '" + KEY_BODY[:40] + "'\n"
        + "description: 'not a secret but still not echoed: " + KEY_BODY[40:80] + "'\n"
    )
    (config_dir / "pasted-key.yaml").write_text(HEAD + "params: {user_name: u}\n'" + KEY_BODY[:50] + "': 1\n")
    code, output, _ = validate(config_dir)
    assert code == 2
    assert f"{file}: params.private_key: looks like a private key" in output
    assert f"{file}: params.private_key: is not a Vault reference" in output
    assert f"{file}: params.api_url: is not an API base URL" in output
    # The pasted text is not printed as a field name either.
    assert f"{config_dir / 'pasted-key.yaml'}: ?: unknown key" in output
    for piece in [KEY_BODY[i:i + 12] for i in range(0, len(KEY_BODY) - 12, 6)]:
        assert piece not in output, "part of the pasted key was echoed"
    assert "BEGIN RSA" not in output


QUOTED = [
    ("grace", {"grace": "sk_live_notreally"}, "sk_live_notreally"),
    ("cron", {"schedule": {"cron": "hunter2 hunter2"}}, "hunter2 hunter2"),
    ("path", {"vault": {"mount": "secret", "path": "apps/../hunter2-secret"}}, "hunter2-secret"),
    ("user", {"params": {"user_name": "bad user hunter2"}}, "hunter2"),
    ("kind", {"provider": "hunter2.provider"}, "hunter2"),
]
QUOTED_FIELDS = {"grace": "grace", "cron": "schedule.cron", "path": "vault.path", "user": "params.user_name", "kind": "provider"}


def test_errors_name_the_field_not_the_value(config_dir: Path) -> None:
    """Whatever the field, the message says what is wrong with it and never quotes what was written."""
    for stem, change, _ in QUOTED:
        change = dict(change)
        write_credential(config_dir, stem, params=change.pop("params", {"user_name": "u"}), path=f"apps/{stem}", **change)
    code, output, _ = validate(config_dir)
    assert code == 2
    for stem, _, value in QUOTED:
        assert f"{config_dir / stem}.yaml: {QUOTED_FIELDS[stem]}: " in output
        assert value not in output


def test_a_symlink_out_of_the_config_dir_is_refused(config_dir: Path, tmp_path: Path) -> None:
    """A link to a file outside the directory is refused; a link that stays inside is read."""
    outside = write_credential(tmp_path / "elsewhere", "outside", params={"user_name": "o"})
    inside = write_credential(config_dir / "..data", "inside", params={"user_name": "i"})
    (config_dir / "outside.yaml").symlink_to(outside)
    (config_dir / "inside.yaml").symlink_to(inside)
    (config_dir / "dangling.yaml").symlink_to(tmp_path / "nothing.yaml")
    code, output, _ = validate(config_dir)
    assert code == 2
    lines = output.splitlines()
    assert f"{config_dir / 'outside.yaml'}: <file>: is a symbolic link to a file outside the config directory; copy the file in instead" in lines
    assert any(line.startswith(f"{config_dir / 'dangling.yaml'}: <file>: ") for line in lines)
    assert not any("inside.yaml" in line for line in lines)


def test_a_group_writable_file_is_read_with_a_warning(config_dir: Path) -> None:
    """A file others may write still validates, with a warning on stderr naming it."""
    file = write_credential(config_dir, "shared", params={"user_name": "s"})
    os.chmod(file, 0o664)
    result = run_rotator(["validate", "--config-dir", str(config_dir)], {})
    assert result.returncode == 0, result.stdout
    assert f"rotator: warning: {file}: <file>: group or others may write this file" in result.stderr
    os.chmod(file, 0o644)
    quiet = run_rotator(["validate", "--config-dir", str(config_dir)], {})
    assert "warning" not in quiet.stderr


# What `validate` must never load: the Vault client, the engine, and the
# provider SDKs. Loading them cost more than a second before each file was
# even read (issue 11: each bad file is reported within a second). Checked by
# what the interpreter imported, not by a clock: these machines are noisy,
# and bench/hostile_validate.py measures the seconds (docs/SECURITY.md).
HEAVY = ("hvac", "boto3", "botocore", "jwt", "joserfc", "croniter", "rotator.engine.reconcile", "rotator.vault.store", "rotator.daemon.loop")


def test_validate_loads_no_vault_client_engine_or_provider_sdk(config_dir: Path) -> None:
    for stem in ("alias-bomb", "one-mib", "deep-lists"):
        (config_dir / f"{stem}.yaml").write_text(HOSTILE[stem][0])
    write_credential(config_dir, "fine", params={"user_name": "fine"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
    # The real command line, with what it imported printed (to stderr) at exit.
    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('IMPORTED', *sorted(sys.modules), file=sys.stderr))\n"
              f"sys.argv = ['rotator', 'validate', '--config-dir', {str(config_dir)!r}]\n"
              "from rotator.cli import main\nmain()\n")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    imported = set(next(line for line in result.stderr.splitlines() if line.startswith("IMPORTED ")).split()[1:])
    assert "rotator.config.loader" in imported and "rotator_providers.aws_iam" in imported  # the parse really ran, with the plugins
    loaded = sorted(name for name in imported if name.split(".")[0] in HEAVY or name in HEAVY)
    assert not loaded, f"validate imported {loaded}"
