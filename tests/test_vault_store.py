"""The Vault store against a real OpenBao dev server: KV v2 check-and-set,
metadata merges within KV v2's limits, error kinds, references, walking,
and the connection settings that pass through to hvac."""

from __future__ import annotations

import hvac
import pytest

from policy_token import vault_policy_token
from rotator.core.errors import CasMismatchError, NotFoundError, PermanentError, TransientError, VaultUnavailableError
from rotator.sandbox.services import OpenBaoServer, free_port
from rotator.config.settings import Settings
from rotator.testing.leaks import assert_no_leaks
from rotator.vault.store import MAX_METADATA_KEYS, VaultStore, Versioned
from rotator.config.settings import VaultConnection


@pytest.fixture
def store(openbao: OpenBaoServer) -> VaultStore:
    return VaultStore(VaultConnection(url=openbao.addr, token=openbao.token))


@pytest.fixture
def base(unique: str) -> str:
    """A folder of this test's own under `secret/`."""
    return f"store-test/{unique}"


# -- check-and-set ------------------------------------------------------------


def test_write_with_cas_0_creates_only_when_absent(store: VaultStore, base: str) -> None:
    """cas=0 creates the path once; a second cas=0 write loses instead of overwriting."""
    assert store.write("secret", f"{base}/a", {"v": "one"}, cas=0) == 1
    with pytest.raises(CasMismatchError):
        store.write("secret", f"{base}/a", {"v": "two"}, cas=0)
    assert store.read("secret", f"{base}/a") == Versioned({"v": "one"}, 1)


def test_stale_cas_loses_and_current_cas_adds_one_version(store: VaultStore, base: str) -> None:
    """A write naming an old version raises CasMismatchError; naming the current one adds exactly one version."""
    store.write("secret", f"{base}/a", {"v": "1"}, cas=0)
    assert store.write("secret", f"{base}/a", {"v": "2"}, cas=1) == 2
    with pytest.raises(CasMismatchError):
        store.write("secret", f"{base}/a", {"v": "stale"}, cas=1)
    assert store.read("secret", f"{base}/a") == Versioned({"v": "2"}, 2)
    assert store.read_version("secret", f"{base}/a", 1) == {"v": "1"}


def test_read_of_a_missing_path_is_empty_at_version_0(store: VaultStore, base: str) -> None:
    """Nothing written yet: data None, version 0 (what a cas=0 write must name)."""
    assert store.read("secret", f"{base}/missing") == Versioned(None, 0)
    assert store.read_metadata("secret", f"{base}/missing") is None
    assert store.read_version("secret", f"{base}/missing", 1) is None


def test_soft_deleted_latest_version_still_reports_its_version(store: VaultStore, bao_client: hvac.Client, base: str) -> None:
    """A deleted latest version reads as no data but keeps its number, so the next CAS write names it."""
    store.write("secret", f"{base}/d", {"v": "1"}, cas=0)
    store.write("secret", f"{base}/d", {"v": "2"}, cas=1)
    bao_client.secrets.kv.v2.delete_latest_version_of_secret(path=f"{base}/d", mount_point="secret")
    assert store.read("secret", f"{base}/d") == Versioned(None, 2)
    assert store.read_version("secret", f"{base}/d", 2) is None
    assert store.read_version("secret", f"{base}/d", 1) == {"v": "1"}
    with pytest.raises(CasMismatchError):
        store.write("secret", f"{base}/d", {"v": "3"}, cas=0)
    assert store.write("secret", f"{base}/d", {"v": "3"}, cas=2) == 3


# -- custom metadata -------------------------------------------------------------


def _metadata(bao_client: hvac.Client, path: str) -> dict:
    return bao_client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")["data"]


def test_merge_keeps_other_custom_keys_and_path_settings(store: VaultStore, bao_client: hvac.Client, base: str) -> None:
    """Only the given keys change; an operator's keys, max_versions, cas_required and delete_version_after stay."""
    path = f"{base}/live"
    store.write("secret", path, {"v": "1"}, cas=0)
    bao_client.secrets.kv.v2.update_metadata(
        path=path, mount_point="secret", max_versions=7, cas_required=True, delete_version_after="72h",
        custom_metadata={"team": "payments", "rotator-key-id": "old"},
    )
    store.merge_custom_metadata("secret", path, {"managed-by": "rotator", "rotator-key-id": "AKIA1"})
    meta = _metadata(bao_client, path)
    assert meta["custom_metadata"] == {"team": "payments", "managed-by": "rotator", "rotator-key-id": "AKIA1"}
    assert meta["max_versions"] == 7
    assert meta["cas_required"] is True
    assert meta["delete_version_after"] == "72h0m0s"
    assert store.read_metadata("secret", path).custom_metadata["team"] == "payments"  # type: ignore[union-attr]


def test_merge_refuses_to_pass_the_64_key_limit(store: VaultStore, bao_client: hvac.Client, base: str) -> None:
    """Adding keys past 64 is refused before anything is written; updating existing keys at 64 is fine."""
    path = f"{base}/full"
    store.write("secret", path, {"v": "1"}, cas=0)
    existing = {f"k{i:02d}": "x" for i in range(MAX_METADATA_KEYS - 1)}
    bao_client.secrets.kv.v2.update_metadata(path=path, mount_point="secret", custom_metadata=existing)
    with pytest.raises(PermanentError, match="64"):
        store.merge_custom_metadata("secret", path, {"managed-by": "rotator", "rotator-key-id": "k"})
    assert _metadata(bao_client, path)["custom_metadata"] == existing
    store.merge_custom_metadata("secret", path, {"managed-by": "rotator"})
    store.merge_custom_metadata("secret", path, {"managed-by": "rotator", "k00": "y"})
    assert len(_metadata(bao_client, path)["custom_metadata"]) == MAX_METADATA_KEYS


def test_merge_refuses_oversized_values_and_keys_without_quoting_them(store: VaultStore, base: str) -> None:
    """A value over 512 bytes or a key over 128 bytes is a PermanentError; the message does not carry the value."""
    path = f"{base}/big"
    store.write("secret", path, {"v": "1"}, cas=0)
    value = "v" * 513
    with pytest.raises(PermanentError, match="size limits") as caught:
        store.merge_custom_metadata("secret", path, {"rotator-note": value})
    assert value not in str(caught.value)
    with pytest.raises(PermanentError, match="size limits"):
        store.merge_custom_metadata("secret", path, {"rotator-" + "k" * 121: "x"})
    store.merge_custom_metadata("secret", path, {"rotator-note": "v" * 512})  # the limit itself is allowed


# -- error kinds --------------------------------------------------------------------


def test_denied_read_is_permanent_and_names_the_path_not_the_token(openbao: OpenBaoServer, bao_client: hvac.Client, base: str) -> None:
    """A 403 from the policy becomes a PermanentError (not transient) naming the path, never the token."""
    bao_client.secrets.kv.v2.create_or_update_secret(path=f"{base}/forbidden", secret={"v": "1"}, mount_point="secret")
    token = vault_policy_token(bao_client, policy_hcl=f'path "secret/data/{base}/allowed/*" {{ capabilities = ["read"] }}')
    store = VaultStore(VaultConnection(url=openbao.addr, token=token))
    with pytest.raises(PermanentError) as caught:
        store.read("secret", f"{base}/forbidden")
    assert not isinstance(caught.value, TransientError)
    assert f"secret/{base}/forbidden" in str(caught.value) and "403" in str(caught.value)
    assert_no_leaks(f"{caught.value!s} {caught.value!r}", [token], where="the error")


def test_unreachable_vault_is_a_transient_vault_unavailable_error() -> None:
    """Nothing listening at VAULT_ADDR: VaultUnavailableError, which callers retry as a TransientError."""
    store = VaultStore(VaultConnection(url=f"http://127.0.0.1:{free_port()}", token="s.never-sent-anywhere", timeout=2))
    store.login()  # token auth: an unreachable Vault is retried on first use, not fatal
    with pytest.raises(VaultUnavailableError) as caught:
        store.read("secret", "anything")
    assert isinstance(caught.value, TransientError)
    assert "never-sent" not in str(caught.value)


# -- references and walking ------------------------------------------------------------


def test_read_ref_returns_the_field(store: VaultStore, base: str) -> None:
    """`MOUNT/PATH#FIELD` reads one string field of the current version."""
    store.write("secret", f"{base}/refs/app", {"private_key": "pem-text-here"}, cas=0)
    assert store.read_ref(f"secret/{base}/refs/app#private_key") == "pem-text-here"


def test_read_ref_of_a_missing_field_or_path_names_the_ref(store: VaultStore, base: str) -> None:
    """A missing field or path is a NotFoundError whose message names the reference."""
    store.write("secret", f"{base}/refs/app", {"private_key": "pem-text-here"}, cas=0)
    for ref in (f"secret/{base}/refs/app#other", f"secret/{base}/refs/none#private_key"):
        with pytest.raises(NotFoundError) as caught:
            store.read_ref(ref)
        assert ref in str(caught.value)
        assert "pem-text-here" not in str(caught.value)


def test_read_ref_of_a_non_string_or_empty_value_is_permanent(store: VaultStore, base: str) -> None:
    """A field that is not a non-empty string is a PermanentError that does not quote it."""
    store.write("secret", f"{base}/refs/odd", {"number": 12345678987, "nested": {"k": "inner-value-9"}, "empty": ""}, cas=0)
    for field in ("number", "nested", "empty"):
        with pytest.raises(PermanentError) as caught:
            store.read_ref(f"secret/{base}/refs/odd#{field}")
        assert not isinstance(caught.value, NotFoundError)
        assert "12345678987" not in str(caught.value) and "inner-value-9" not in str(caught.value)


def test_walk_yields_every_leaf_below_a_folder(store: VaultStore, base: str) -> None:
    """Leaves at any depth, relative to the folder; an empty or missing folder yields nothing."""
    for leaf in ("a", "x/b", "x/y/c", "z/d"):
        store.write("secret", f"{base}/tree/{leaf}", {"v": "1"}, cas=0)
    assert sorted(store.walk("secret", f"{base}/tree")) == ["a", "x/b", "x/y/c", "z/d"]
    assert sorted(store.walk("secret", f"{base}/tree/x")) == ["b", "y/c"]
    assert list(store.walk("secret", f"{base}/nothing-here")) == []
    assert store.list("secret", f"{base}/nothing-here") == []


# -- connection settings -----------------------------------------------------------------


def test_tls_and_namespace_settings_reach_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """VAULT_SKIP_VERIFY, VAULT_CACERT and VAULT_NAMESPACE end up on the hvac client; the token is not in any repr."""
    monkeypatch.setenv("VAULT_ADDR", "https://vault.example:8200")
    monkeypatch.setenv("VAULT_TOKEN", "s.repr-must-not-show-this")
    monkeypatch.setenv("VAULT_NAMESPACE", "team-a")
    monkeypatch.setenv("VAULT_CACERT", "/etc/ssl/vault-ca.pem")
    settings = Settings()
    connection = settings.vault_connection()
    assert connection.verify == "/etc/ssl/vault-ca.pem" and connection.namespace == "team-a"
    client = VaultStore(connection)._client
    assert client.adapter._kwargs["verify"] == "/etc/ssl/vault-ca.pem"
    assert client.adapter.namespace == "team-a"
    assert_no_leaks(f"{connection!r} {settings!r}", ["s.repr-must-not-show-this"], where="a repr")

    monkeypatch.setenv("VAULT_SKIP_VERIFY", "true")  # wins over VAULT_CACERT, as in Vault's CLI
    assert VaultStore(Settings().vault_connection())._client.adapter._kwargs["verify"] is False
    monkeypatch.setenv("VAULT_SKIP_VERIFY", "false")
    assert Settings().vault_connection().verify == "/etc/ssl/vault-ca.pem"


def test_namespace_is_sent_to_vault(openbao: OpenBaoServer, bao_client: hvac.Client, unique: str) -> None:
    """With VAULT_NAMESPACE set, reads and writes land in that OpenBao namespace and nowhere else."""
    namespace = f"ns-{unique}"
    bao_client.sys.create_namespace(path=namespace)
    hvac.Client(url=openbao.addr, token=openbao.token, namespace=namespace).sys.enable_secrets_engine(
        "kv", path="kv", options={"version": "2"}
    )
    inside = VaultStore(VaultConnection(url=openbao.addr, token=openbao.token, namespace=namespace))
    assert inside.write("kv", "app/one", {"v": "1"}, cas=0) == 1
    assert inside.read("kv", "app/one") == Versioned({"v": "1"}, 1)
    outside = VaultStore(VaultConnection(url=openbao.addr, token=openbao.token))
    with pytest.raises(PermanentError):
        outside.write("kv", "app/one", {"v": "1"}, cas=0)  # no kv/ mount in the root namespace


def test_read_many_matches_one_by_one_reads(openbao: OpenBaoServer, bao_client: hvac.Client, unique: str) -> None:
    """The start-up bulk read returns what single reads return; what it cannot read it leaves out."""
    store = VaultStore(VaultConnection(url=openbao.addr, token=openbao.token))
    base = f"bulk-{unique}"
    for i in range(20):
        bao_client.secrets.kv.v2.create_or_update_secret(path=f"{base}/r{i}", secret={"i": i}, mount_point="secret")
    bao_client.secrets.kv.v2.create_or_update_secret(path=f"{base}/r3", secret={"i": "again"}, mount_point="secret")
    bao_client.secrets.kv.v2.delete_latest_version_of_secret(path=f"{base}/r5", mount_point="secret")
    paths = [f"{base}/r{i}" for i in range(20)] + [f"{base}/missing"]
    found = store.read_many("secret", paths, workers=4)
    assert found[f"{base}/missing"] == Versioned(None, 0)
    assert found[f"{base}/r3"] == Versioned({"i": "again"}, 2)
    assert f"{base}/r5" not in found, "a deleted latest version is left to the careful path"
    for i in (0, 7, 19):
        assert found[f"{base}/r{i}"] == store.read("secret", f"{base}/r{i}")

    limited = VaultStore(VaultConnection(url=openbao.addr, token=vault_policy_token(bao_client)))
    assert limited.read_many("secret", [f"{base}/r0"]) == {}, "denied reads are left out, not guessed"


def test_a_deleted_record_is_undeleted_under_the_shipped_policy_and_rewritten_from_an_older_one_without_it(
    openbao: OpenBaoServer, bao_client: hvac.Client, unique: str
) -> None:
    """RecordStore.revive, with a token holding only config/rotator.hcl: the
    soft-deleted latest version itself comes back (nothing lost, no new
    version); under a policy without `undelete`, the newest readable older
    version is written back as a new one."""
    from rotator.core.state import StateRecord
    from rotator.vault.records import RecordStore

    limited = VaultStore(VaultConnection(url=openbao.addr, token=vault_policy_token(bao_client)))
    records = RecordStore(limited, "secret", "rotator/state", "rotator/state-stash")
    name = f"revive-{unique}"
    path = f"rotator/state/{name}"
    first = StateRecord.new(name, "aws.iam_access_key").to_vault()
    second = {**first, "rotations": 1}
    limited.write("secret", path, first, cas=0)
    limited.write("secret", path, second, cas=1)
    kv = bao_client.secrets.kv.v2
    kv.delete_latest_version_of_secret(path=path, mount_point="secret")
    assert limited.read("secret", path) == Versioned(None, 2)
    revived = records.revive(name)
    assert revived is not None and revived.version == 2 and revived.data is not None and revived.data["rotations"] == 1
    assert records.revive(name) is None  # readable again: nothing to do

    without = vault_policy_token(bao_client, policy_hcl=VAULT_POLICY_WITHOUT_UNDELETE())
    older = RecordStore(VaultStore(VaultConnection(url=openbao.addr, token=without)), "secret", "rotator/state", "rotator/state-stash")
    kv.delete_latest_version_of_secret(path=path, mount_point="secret")
    revived = older.revive(name)
    assert revived is not None and revived.version == 3 and revived.data is not None and revived.data["rotations"] == 0


def test_a_revive_whose_read_back_fails_keeps_the_version_it_undeleted(
    openbao: OpenBaoServer, bao_client: hvac.Client, unique: str
) -> None:
    """Sim F214, against OpenBao: the undelete lands and the read after it fails (a 429). The revive raises
    (the next pass tries again) and never writes an older version over the one it undeleted."""
    from rotator.core.state import StateRecord
    from rotator.vault.records import RecordStore

    store = VaultStore(VaultConnection(url=openbao.addr, token=vault_policy_token(bao_client)))
    name = f"revive-read-{unique}"
    path = f"rotator/state/{name}"
    first = StateRecord.new(name, "aws.iam_access_key").to_vault()
    store.write("secret", path, first, cas=0)
    store.write("secret", path, {**first, "rotations": 1}, cas=1)
    bao_client.secrets.kv.v2.delete_latest_version_of_secret(path=path, mount_point="secret")

    class ReadFailsAfterUndelete:
        def __init__(self) -> None:
            self.undeleted = False

        def __getattr__(self, attr: str) -> object:
            return getattr(store, attr)

        def undelete_version(self, mount: str, at: str, version: int) -> None:
            store.undelete_version(mount, at, version)
            self.undeleted = True

        def read(self, mount: str, at: str) -> Versioned:
            if self.undeleted:
                raise TransientError("429 Too Many Requests", retry_after=1.0)
            return store.read(mount, at)

    flaky = ReadFailsAfterUndelete()
    with pytest.raises(TransientError):
        RecordStore(flaky, "secret", "rotator/state", "rotator/state-stash").revive(name)  # type: ignore[arg-type]
    kept = store.read("secret", path)
    assert kept.version == 2 and kept.data is not None and kept.data["rotations"] == 1, "an older version was written over it"
    assert RecordStore(store, "secret", "rotator/state", "rotator/state-stash").revive(name) is None  # readable: nothing to do


def VAULT_POLICY_WITHOUT_UNDELETE() -> str:  # noqa: N802
    from policy_token import VAULT_POLICY

    text = VAULT_POLICY.read_text()
    start = text.index('path "secret/undelete/rotator/state/*"')
    return text[:start] + text[text.index("}", start) + 1:]
