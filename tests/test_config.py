"""Credential files: parsing, validation and the `validate` command."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from helpers import run_rotator, write_credential
from rotator.config.loader import load_directory
from rotator.core.validators import check_api_url, format_duration, parse_duration, parse_vault_ref, secret_lookalike
from rotator.engine.registry import load_providers

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("24h", 86400), ("30d", 2592000), ("2w", 1209600), ("1h30m", 5400), ("1d12h", 129600), ("0s", 0)],
)
def test_durations_parse(text: str, seconds: int) -> None:
    """Durations are integers with s, m, h, d or w units, combinable largest first."""
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "1.5h", "h", "30x", "1m1h", "1h1h", " 1 h", "-1h", 30])
def test_bad_durations_are_rejected(text: object) -> None:
    """Anything else is an error that says what a duration looks like."""
    with pytest.raises(ValueError, match="duration|unit"):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("ref", ["secret/github/app#private_key", "kv/a/b/c#key.pem"])
def test_vault_refs_parse(ref: str) -> None:
    """A reference is MOUNT/PATH#FIELD."""
    mount, path, field = parse_vault_ref(ref)
    assert f"{mount}/{path}#{field}" == ref


@pytest.mark.parametrize("ref", ["secret#x", "secret/a", "secret/../x#f", "secret/a#", "/secret/a#f", "secret/a#f#g", "secret//a#f"])
def test_bad_vault_refs_are_rejected(ref: str) -> None:
    """References that are incomplete or would escape a path are errors."""
    with pytest.raises(ValueError):
        parse_vault_ref(ref)


def test_api_urls_must_be_https_except_loopback() -> None:
    """https anywhere; plain http only on loopback hosts."""
    assert check_api_url("https://api.github.com/") == "https://api.github.com"
    assert check_api_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    for bad in ["http://api.github.com", "http://10.0.0.1:80", "ftp://x", "https://u:p@host", "not a url"]:
        with pytest.raises(ValueError):
            check_api_url(bad)


@pytest.mark.parametrize(
    "value",
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "sk_live_" + "a1B2" * 6,
        "rk_test_" + "Z9y8" * 6,
        "whsec_" + "Q" * 24,
        "ghs_" + "x" * 36,
        "github_pat_" + "A1" * 15,
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ],
)
def test_secret_lookalikes_are_caught(value: str) -> None:
    """Values shaped like well-known secrets are recognised."""
    assert secret_lookalike(value)


@pytest.mark.parametrize("value", ["ci-deployer", "AKIAIOSFODNN7EXAMPLE", "0123456789abcdef0123456789abcdef01234567", "secret/github/app#private_key"])
def test_ordinary_values_are_not_secrets(value: str) -> None:
    """Key ids, hex digests and references are not mistaken for secrets."""
    assert secret_lookalike(value) is None


def _problems(config_dir: Path) -> list[str]:
    return [str(p) for p in load_directory(config_dir, load_providers()).problems]


def test_example_configs_are_valid() -> None:
    """Every example shipped in config/ validates."""
    result = load_directory(REPO / "config" / "credentials.d", load_providers())
    assert result.problems == []
    assert result.credentials


def test_a_good_file_loads_with_defaults(tmp_path: Path) -> None:
    """The name defaults to the file stem; params are the provider's model."""
    write_credential(tmp_path, "ci-deployer", params={"user_name": "ci-deployer"})
    result = load_directory(tmp_path, load_providers())
    assert result.problems == []
    cred = result.credentials["ci-deployer"]
    assert cred.params.user_name == "ci-deployer"  # type: ignore[attr-defined]
    assert cred.params.delete_after_deactivation == timedelta(days=7)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"grace": "30d"}, "grace", "shorter than the rotation interval"),
        ({"grace": "soon"}, "grace", "not a duration"),
        ({"schedule": {"every": "1d", "cron": "0 3 * * *"}}, "schedule", "exactly one of every or cron"),
        ({"schedule": {"cron": "0 3 * *"}}, "schedule.cron", "5-field cron"),
        ({"schedule": {"every": "1d", "jitter": "2d"}}, "schedule.jitter", "shorter than the rotation interval"),
        ({"vault": {"mount": "secret", "path": "../etc/passwd"}}, "vault.path", "not a safe Vault path"),
        ({"vault": {"mount": "secret", "path": "apps//x"}}, "vault.path", "not a safe Vault path"),
        ({"vault": {"mount": "secret", "path": "apps/x?y"}}, "vault.path", "not a safe Vault path"),
        ({"name": "Bad Name"}, "name", "String should match pattern"),
        ({"provider": "nope.nothing"}, "provider", "unknown provider"),
        ({"params": {"user_name": "u", "colour": 1}}, "params.colour", "unknown key"),
        ({"params": {}}, "params.user_name", "Field required"),
        ({"params": {"user_name": "u", "delete_after_deactivation": "7 days"}}, "params.delete_after_deactivation", "not a duration"),
        ({"description": "key is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}, "description", "looks like an AWS secret access key"),
        ({"owner": ""}, "owner", "at least 1 character"),
    ],
)
def test_each_problem_names_file_and_field(tmp_path: Path, change: dict, field: str, message: str) -> None:
    """A bad file is reported as FILE: field.path: message, and nothing else is lost."""
    write_credential(tmp_path, "good", params={"user_name": "good"})
    bad = write_credential(tmp_path, "bad", params={"user_name": "bad"}, **{k: v for k, v in change.items() if k != "params"})
    if "params" in change:
        write_credential(tmp_path, "bad", params=change["params"])
    result = load_directory(tmp_path, load_providers())
    lines = [str(p) for p in result.problems]
    assert any(line.startswith(f"{bad}: {field}: ") and message in line for line in lines), lines
    assert "good" in result.credentials


def test_duplicate_names_and_paths_are_errors_in_both_files(tmp_path: Path) -> None:
    """Two files with one name, or one live path, are each reported."""
    write_credential(tmp_path, "a", params={"user_name": "a"}, name="same")
    write_credential(tmp_path, "b", params={"user_name": "b"}, name="same")
    write_credential(tmp_path, "c", params={"user_name": "c"}, path="apps/shared")
    write_credential(tmp_path, "d", params={"user_name": "d"}, path="apps/shared")
    result = load_directory(tmp_path, load_providers())
    assert result.credentials == {}
    text = "\n".join(str(p) for p in result.problems)
    for stem in "abcd":
        assert f"{tmp_path / stem}.yaml: " in text


def test_yaml_problems_are_reported_not_raised(tmp_path: Path) -> None:
    """Broken YAML, a duplicated key or a non-mapping file is a problem line."""
    (tmp_path / "broken.yaml").write_text("provider: [unclosed\n")
    (tmp_path / "twice.yaml").write_text("owner: a\nowner: b\n")
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    lines = _problems(tmp_path)
    assert any("broken.yaml: <file>: not valid YAML" in line for line in lines)
    assert any("twice.yaml: <file>: not valid YAML" in line and "appears twice" in line for line in lines)
    assert any("list.yml: <file>: must be a YAML mapping" in line for line in lines)


def test_live_path_may_not_overlap_state_records(tmp_path: Path) -> None:
    """A live path inside the rotator's own state prefix is refused."""
    write_credential(tmp_path, "x", params={"user_name": "x"}, path="rotator/state/x")
    result = load_directory(tmp_path, load_providers(), state_location=("secret", "rotator/state"))
    assert any(p.field == "vault.path" and "state records" in p.message for p in result.problems)


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    """`rotator validate` exits 0 when all is valid, 2 with one line per problem, never a traceback."""
    good = tmp_path / "good"
    write_credential(good, "ci", params={"user_name": "ci"})
    ok = run_rotator(["validate", "--config-dir", str(good)], {})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout == ""

    bad = tmp_path / "bad"
    write_credential(bad, "ci", params={"user_name": "ci", "colour": "x"}, grace="40d")
    failed = run_rotator(["validate", "--config-dir", str(bad)], {})
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr + failed.stdout
    lines = failed.stdout.strip().splitlines()
    assert f"{bad / 'ci.yaml'}: params.colour: unknown key" in lines
    assert any(line.startswith(f"{bad / 'ci.yaml'}: grace: ") for line in lines)


def test_validate_examples_through_the_cli() -> None:
    """The shipped examples pass `rotator validate`."""
    result = run_rotator(["validate", "--config-dir", str(REPO / "config" / "credentials.d")], {})
    assert result.returncode == 0, result.stdout


def test_schema_describes_every_provider() -> None:
    """`rotator schema` prints a JSON Schema naming each provider and its params."""
    import json

    result = run_rotator(["schema"], {})
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "aws.iam_access_key" in schema["properties"]["provider"]["enum"]
    assert schema["additionalProperties"] is False
