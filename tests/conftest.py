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
