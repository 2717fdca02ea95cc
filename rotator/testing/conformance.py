"""The provider conformance suite: what every provider, built-in or
third-party, must do. Subclass `ProviderConformance` in a test module and
supply the fixtures below; pytest collects the inherited tests.

    class TestAwsConformance(ProviderConformance):
        @pytest.fixture
        def provider(self, ...): return AwsIamAccessKeyProvider(params, ctx)

        @contextmanager
        def fault(self, kind): ...   # make the next API calls fail

The suite runs against the real thing or a stateful fake of it, never a
mock of the provider's own functions.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest

from rotator.core.errors import PermanentError, RotatorError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, Provider


def verify_eventually(provider: Provider, credential: IssuedCredential, *, seconds: float = 30.0) -> None:
    """Verify with the provider's own patience for eventual consistency."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            provider.verify(credential)
            return
        except TransientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def revoke_confirmed(provider: Provider, handle: dict[str, str] | object, *, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if provider.is_revoked(handle):  # type: ignore[arg-type]
            return True
        time.sleep(0.2)
    return False


class ProviderConformance:
    """Inherit, and provide `provider` and `fault`."""

    credential_name = "conformance"

    @pytest.fixture
    def provider(self) -> Provider:  # pragma: no cover - supplied by subclasses
        raise NotImplementedError

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[None]:  # pragma: no cover - supplied by subclasses
        """While active, the provider's API fails: `kind` is "transient"
        (a 5xx, throttling) or "permanent" (denied, bad request)."""
        raise NotImplementedError
        yield

    def context(self, **overrides: object) -> IssueContext:
        values: dict[str, object] = {
            "credential": self.credential_name,
            "rotation_id": "r" + uuid.uuid4().hex[:16],
        }
        values.update(overrides)
        return IssueContext(**values)  # type: ignore[arg-type]

    # -- the contract every provider keeps -----------------------------------

    def test_issued_credential_verifies(self, provider: Provider) -> None:
        """A freshly issued credential passes verification, which uses it."""
        credential = provider.issue(self.context())
        try:
            verify_eventually(provider, credential)
            assert set(credential.data) == set(provider.live_fields)
            assert all(isinstance(v, str) and v for v in credential.data.values())
        finally:
            provider.revoke(credential.handle)

    def test_key_id_and_repr_hold_no_secret(self, provider: Provider) -> None:
        """The key id and the repr never contain any live (secret) value."""
        credential = provider.issue(self.context())
        try:
            secrets = [v for k, v in credential.data.items() if len(v) >= 8 and k not in {"key_id", "access_key_id", "endpoint_id", "expires_at", "public_key", "fingerprint"}]
            for secret in secrets:
                assert secret not in credential.key_id
                assert secret not in repr(credential)
        finally:
            provider.revoke(credential.handle)

    def test_revoke_is_confirmed_and_the_credential_stops_working(self, provider: Provider) -> None:
        """After revoke the provider rejects the credential, and says so."""
        credential = provider.issue(self.context())
        verify_eventually(provider, credential)
        provider.revoke(credential.handle)
        assert revoke_confirmed(provider, credential.handle)
        with pytest.raises(RotatorError):
            provider.verify(credential)

    def test_revoke_is_idempotent(self, provider: Provider) -> None:
        """Revoking what is already revoked is not an error."""
        credential = provider.issue(self.context())
        provider.revoke(credential.handle)
        provider.revoke(credential.handle)
        assert revoke_confirmed(provider, credential.handle)

    def test_listing_finds_marked_keys(self, provider: Provider) -> None:
        """Keys the rotator made carry its mark, so a crash's orphans can be found."""
        if not provider.can_list:
            pytest.skip(f"{provider.kind} cannot list its credentials")
        ctx = self.context()
        credential = provider.issue(ctx)
        try:
            keys = {k.key_id: k for k in provider.list_keys()}
            assert credential.key_id in keys
            mark = keys[credential.key_id].mark
            assert mark is not None
            assert (mark.credential, mark.rotation_id) == (ctx.credential, ctx.rotation_id)
        finally:
            provider.revoke(credential.handle)
        assert credential.key_id not in {k.key_id for k in provider.list_keys() if k.active}

    def test_transient_faults_raise_transient_error(self, provider: Provider) -> None:
        """Outages and throttling surface as TransientError, nothing else."""
        with self.fault("transient"), pytest.raises(TransientError):
            provider.issue(self.context())

    def test_permanent_faults_raise_permanent_error(self, provider: Provider) -> None:
        """Denials and bad requests surface as PermanentError, nothing else."""
        with self.fault("permanent"), pytest.raises(PermanentError):
            provider.issue(self.context())
