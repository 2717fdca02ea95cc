"""The simulation's KV v2 model against the real OpenBao: the same
operations, through `rotator.vault.store.VaultStore` and through `KvModel`, give
the same results and the same errors, so the model cannot drift from the
thing it stands for."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import hvac

from rotator.testing.sim.kv import KvModel
from rotator.config.settings import VaultConnection
from rotator.vault.store import VaultStore


class RealOperator:
    """What an operator does with `bao kv ...` that VaultStore has no method for."""

    def __init__(self, client: hvac.Client) -> None:
        self.kv = client.secrets.kv.v2

    def delete_latest(self, mount: str, path: str) -> None:
        self.kv.delete_latest_version_of_secret(path=path, mount_point=mount)

    def undelete(self, mount: str, path: str, versions: list[int]) -> None:
        self.kv.undelete_secret_versions(path=path, versions=versions, mount_point=mount)

    def destroy_versions(self, mount: str, path: str, versions: list[int]) -> None:
        self.kv.destroy_secret_versions(path=path, versions=versions, mount_point=mount)

    def delete_metadata(self, mount: str, path: str) -> None:
        self.kv.delete_metadata_and_all_versions(path=path, mount_point=mount)

    def configure(self, mount: str, path: str, *, max_versions: int) -> None:
        self.kv.update_metadata(path=path, max_versions=max_versions, mount_point=mount)


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        value = fn()
    except Exception as exc:  # the error's kind is part of the behaviour
        return ("raises", type(exc).__name__)
    if hasattr(value, "current_version"):  # LiveMetadata
        return ("metadata", value.current_version, dict(sorted(value.custom_metadata.items())))
    return value


def script(store: Any, operator: Any, base: str) -> list[Any]:
    m, p, q = "secret", f"{base}/live", f"{base}/never-written"
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("read absent", lambda: store.read(m, p)),
        ("metadata absent", lambda: store.read_metadata(m, p)),
        ("cas 1 on absent", lambda: store.write(m, p, {"v": "1"}, cas=1)),
        ("cas 0 creates", lambda: store.write(m, p, {"v": "1"}, cas=0)),
        ("cas 0 again", lambda: store.write(m, p, {"v": "x"}, cas=0)),
        ("cas 1", lambda: store.write(m, p, {"v": "2", "n": {"deep": [1, 2]}}, cas=1)),
        ("stale cas", lambda: store.write(m, p, {"v": "x"}, cas=1)),
        ("read", lambda: store.read(m, p)),
        ("read_data", lambda: store.read_data(m, p)),
        ("read version 1", lambda: store.read_version(m, p, 1)),
        ("read version 9", lambda: store.read_version(m, p, 9)),
        ("merge", lambda: store.merge_custom_metadata(m, p, {"managed-by": "rotator", "rotator-key-id": "k1"})),
        ("merge again", lambda: store.merge_custom_metadata(m, p, {"rotator-key-id": "k2", "rotator-rotation-id": "r2"})),
        ("metadata", lambda: store.read_metadata(m, p)),
        ("too long", lambda: store.merge_custom_metadata(m, p, {"rotator-x": "v" * 600})),
        ("soft delete", lambda: operator.delete_latest(m, p)),
        ("read deleted", lambda: store.read(m, p)),
        ("read_data deleted", lambda: store.read_data(m, p)),
        ("read version 2 deleted", lambda: store.read_version(m, p, 2)),
        ("metadata after delete", lambda: store.read_metadata(m, p)),
        ("cas 0 over deleted", lambda: store.write(m, p, {"v": "x"}, cas=0)),
        ("cas 2 over deleted", lambda: store.write(m, p, {"v": "3"}, cas=2)),
        ("undelete 2", lambda: operator.undelete(m, p, [2])),
        ("read version 2 undeleted", lambda: store.read_version(m, p, 2)),
        ("destroy 1", lambda: operator.destroy_versions(m, p, [1])),
        ("read version 1 destroyed", lambda: store.read_version(m, p, 1)),
        ("max_versions 2", lambda: operator.configure(m, p, max_versions=2)),
        ("cas 3", lambda: store.write(m, p, {"v": "4"}, cas=3)),
        ("cas 4", lambda: store.write(m, p, {"v": "5"}, cas=4)),
        ("read pruned 3", lambda: store.read_version(m, p, 3)),
        ("read kept 4", lambda: store.read_version(m, p, 4)),
        ("metadata kept", lambda: store.read_metadata(m, p)),
        ("list", lambda: store.list(m, base)),
        ("read_ref", lambda: store.read_ref(f"{m}/{p}#v")),
        ("read_ref missing field", lambda: store.read_ref(f"{m}/{p}#nope")),
        ("merge never written", lambda: store.merge_custom_metadata(m, q, {"managed-by": "rotator"})),
        ("metadata never written", lambda: store.read_metadata(m, q)),
        ("read never written", lambda: store.read(m, q)),
        ("cas 0 never written", lambda: store.write(m, q, {"v": "1"}, cas=0)),
        ("destroy never written", lambda: store.destroy(m, f"{base}/nothing")),
        ("destroy", lambda: store.destroy(m, q)),
        ("read destroyed", lambda: store.read(m, q)),
        ("metadata destroyed", lambda: store.read_metadata(m, q)),
        ("delete all", lambda: operator.delete_metadata(m, p)),
        ("read after delete all", lambda: store.read(m, p)),
        ("metadata after delete all", lambda: store.read_metadata(m, p)),
        ("cas 0 after delete all", lambda: store.write(m, p, {"v": "again"}, cas=0)),
    ]
    return [(name, outcome(fn)) for name, fn in steps]


def test_the_kv_model_behaves_as_openbao_does(openbao, bao_client: hvac.Client, unique: str) -> None:  # type: ignore[no-untyped-def]
    """Every operation the engine uses, and the operator's deletes, answer alike."""
    real = VaultStore(VaultConnection(url=openbao.addr, token=openbao.token))
    model = KvModel()
    base = f"sim-kv/{unique}"
    expected = script(real, RealOperator(bao_client), base)
    got = script(model, model, base)
    mismatches = [(name, want, have) for (name, want), (_, have) in zip(expected, got, strict=True) if want != have]
    assert not mismatches, "\n".join(f"{name}: OpenBao {want!r}, model {have!r}" for name, want, have in mismatches)


# VaultStore methods the simulation has no use for: logging in, health, the audit anchor's transit keys, and the
# daemon's start-up reader (rotator.daemon.prefetch falls back to `read_many` where a store has none).
NOT_MODELLED = {"login", "maintain_token", "token_info", "is_ready", "transit_sign", "transit_verify", "transit_public_keys",
                "bulk_reader"}


def test_the_model_has_every_method_the_engine_may_call() -> None:
    """A method VaultStore gains must be modelled too, with the same signature."""
    public = {n for n, f in inspect.getmembers(VaultStore, inspect.isfunction) if not n.startswith("_")} - NOT_MODELLED
    missing = sorted(n for n in public if not hasattr(KvModel, n))
    assert not missing, f"KvModel lacks {missing}"
    differ = [n for n in sorted(public) if list(inspect.signature(getattr(VaultStore, n)).parameters)
              != list(inspect.signature(getattr(KvModel, n)).parameters)]
    assert not differ, f"KvModel's signatures differ from VaultStore's: {differ}"
