"""Fixtures that start real services: an OpenBao dev server and a moto server
with IAM authentication enforced. Both are started once per test session on
free loopback ports and stopped at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from rotator.sandbox.services import MotoServer, OpenBaoServer


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def openbao(services_dir: Path) -> Iterator[OpenBaoServer]:
    server = OpenBaoServer(services_dir / "openbao").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto(services_dir: Path) -> Iterator[MotoServer]:
    server = MotoServer(services_dir / "moto").start()
    yield server
    server.stop()


@pytest.fixture
def bao_client(openbao: OpenBaoServer) -> hvac.Client:
    """A root hvac client, for tests to seed and inspect Vault directly."""
    return hvac.Client(url=openbao.addr, token=openbao.token)


@pytest.fixture
def unique() -> str:
    """A short unique suffix, so tests sharing one server never collide."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def vault_env(openbao: OpenBaoServer, unique: str) -> dict[str, str]:
    """Environment for a rotator process talking to the test OpenBao, with a
    state prefix of its own so tests never see each other's records."""
    return {
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.token,
        "ROTATOR_STATE_MOUNT": "secret",
        "ROTATOR_STATE_PREFIX": f"rotator-test/{unique}",
        "ROTATOR_LOG_FORMAT": "json",
    }


@pytest.fixture(autouse=True)
def _no_ambient_vault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never talk to a Vault or AWS account from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "ROTATOR_", "AWS_")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 in this process at the moto server, as the admin."""
    env = moto.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def iam_admin(moto: MotoServer):  # type: ignore[no-untyped-def]
    import boto3

    env = moto.env()
    return boto3.client(
        "iam", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def iam_user(iam_admin, unique: str) -> str:  # type: ignore[no-untyped-def]
    """A fresh IAM user for one test."""
    name = f"ci-{unique}"
    iam_admin.create_user(UserName=name)
    return name


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    path = tmp_path / "credentials.d"
    path.mkdir()
    return path


@pytest.fixture
def rotator_env(vault_env: dict[str, str], moto: MotoServer, config_dir: Path) -> dict[str, str]:
    """Environment for `python -m rotator` against the test OpenBao and moto."""
    return {**vault_env, **moto.env(), "ROTATOR_CONFIG_DIR": str(config_dir)}


@pytest.fixture
def aws_world(rotator_env: dict[str, str], bao_client: hvac.Client, iam_admin, iam_user: str, config_dir: Path, moto: MotoServer):  # type: ignore[no-untyped-def]
    """One AWS credential file (grace 2s, deleted at the end of grace) and
    the means to inspect Vault and moto; output is scanned for secrets."""
    from aws_world import AwsWorld
    from helpers import SecretLedger, write_credential

    name = iam_user
    live_path = f"apps/{name}"
    write_credential(config_dir, name, params={"user_name": iam_user, "delete_after_deactivation": "0s"}, grace="2s", every="30d", path=live_path)
    ledger = SecretLedger()
    world = AwsWorld(bao_client, iam_admin, moto.endpoint, rotator_env, iam_user, name, live_path, ledger)
    yield world
    ledger.assert_clean()


@pytest.fixture(autouse=True)
def vendor_descriptions(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Every exchange a sandbox serves in any test is held to the vendors'
    OpenAPI descriptions (tests/openapi_check.py): a provider request or a
    sandbox answer that breaks them fails the test that caused it. A test
    marked `off_spec_vendor` plays a hostile vendor on purpose: its
    sandbox answers are off-spec by design, so only its requests are held."""
    off_spec = request.node.get_closest_marker("off_spec_vendor") is not None
    try:
        from openapi_check import problems
    except ImportError:  # a venv made before openapi-core joined the test extra: `make install`
        yield []         # (tests/test_vendor_descriptions.py still fails loudly without it)
        return
    from rotator.sandbox.exchanges import observe

    found: list[str] = []
    stop = observe(lambda exchange: found.extend(p for p in problems(exchange) if not (off_spec and p.startswith("response "))))
    try:
        yield found
    finally:
        stop()
    if found:
        pytest.fail("broke the vendored OpenAPI operations:\n  " + "\n  ".join(sorted(set(found))[:20]), pytrace=False)
