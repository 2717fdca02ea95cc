"""`aws.iam_access_key`: IAM user access keys, through boto3.

Invariants:
- at most the 2 keys per user AWS allows: a user whose second key the
  rotator did not make gets a clear error, and no key is ever deleted
  unless the rotator made it (the engine only revokes keys it recorded);
- each key the rotator makes is marked with a user tag whose key is the
  access key id (the convention the AWS console uses for key descriptions)
  and whose value is `rotator:CREDENTIAL:ROTATION_ID`; tagging is a second
  call, so the mark is not atomic: right before the create, a user tag
  `rotator-issuing:CREDENTIAL` = `ROTATION_ID AT KEY_ID...` (the rotation,
  when the tag was set, the keys it listed before) says a rotation is
  creating, and the `TagUser` that marks the new key clears it (empty
  value) in the same call; a key left unmarked (a crash, a lost answer) is
  told from one a person made by that tag even when the state record is
  lost too (rotator.core.provider.IssuingNote);
- throttling and 5xx are transient; `LimitExceeded` is a state problem and
  permanent; a new key that STS does not accept yet is transient (keys take
  seconds to propagate), and the engine's verification budget covers it;
- a revocation is confirmed by STS rejecting the old key itself
  (`InvalidClientTokenId`), not by ListAccessKeys: a deleted key works for
  seconds after the delete;
- boto3 honours `AWS_ENDPOINT_URL` by itself; `role_arn` is assumed first;
- a create is made first: the 2-key limit is AWS's to check
  (`LimitExceeded`), and only then are the user's keys listed, to name the
  ones in the way (`NoCapacityError`);
- clients are made without reading anything from disk on the hot path: IAM
  clients are shared per identity; the per-key STS checks (verify,
  is_revoked) are one GetCallerIdentity each, signed with the key itself
  (SigV4) and sent through the HTTP session of one STS client per region and
  endpoint settings, which also resolved the endpoint (`AWS_ENDPOINT_URL`,
  the AWS config): no botocore client per key; no lock is held across a
  network call.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from rotator.core.crashpoints import crashpoint
from rotator.core.errors import NotFoundError, PermanentError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, NoCapacityError, Provider, ProviderKey
from rotator.core.validators import Duration
from rotator_providers.aws_tags import issuing_cleared, issuing_tag, mark_value, parse_issuing, parse_mark

T = TypeVar("T")
_TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "ServiceUnavailable", "ServiceFailure", "InternalFailure", "RequestTimeout", "RequestExpired",
    "IDPCommunicationError", "ConcurrentModification",
}
# What picks the identity boto3 uses, besides params: part of the client cache key.
_IDENTITY_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")
_CLIENTS: dict[tuple[str | None, ...], tuple[Any, datetime | None]] = {}
_CLIENTS_LOCK = threading.Lock()  # guards the dict only, never held across a call to AWS
_CLIENT_MAKERS: dict[tuple[str | None, ...], threading.Lock] = {}  # one maker per identity: no stampede at start
# Per-key STS checks: a botocore client per key costs 5-25 ms of CPU (a fresh
# boto3 Session's even re-reads the service models from disk: most of a
# rotation's CPU before issue 15). One STS client per region and endpoint
# settings (made once, from one botocore session, under a lock: making
# clients from a shared session is not thread-safe; CPU only, no I/O)
# resolves the endpoint and lends its pooled HTTP session; each check signs
# its one request with the key it checks.
_STS_SESSION: Any = None  # a botocore.session.Session, made on first use
_STS_LOCK = threading.Lock()
# What picks the STS endpoint and how it is reached: part of the template's cache key.
_STS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
            "AWS_CONFIG_FILE", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_CA_BUNDLE",
            "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
_STS_TEMPLATES: dict[tuple[str | None, ...], Any] = {}  # guarded by _STS_LOCK
_GET_CALLER_IDENTITY = b"Action=GetCallerIdentity&Version=2011-06-15"


@functools.cache
def _boto_config() -> Any:
    # boto3/botocore load on first use, not at import: `rotator validate`
    # reads only the params model, and must answer within a second.
    from botocore.config import Config

    # A connection per rotation thread (botocore's default pool of 10 drops and reopens them at concurrency 16).
    return Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=15, max_pool_connections=64)


class AwsIamParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_name: str = Field(pattern=r"^[\w+=,.@-]{1,64}$", description="IAM user whose access keys are rotated")
    region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$", description="region for STS calls")
    role_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$", description="role to assume first")
    delete_after_deactivation: Duration = Field(
        default=timedelta(days=7), description="time from deactivation (end of grace) to deletion; 0s deletes at the end of grace"
    )


def _translate(exc: Exception, what: str) -> Exception:
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(f"AWS {code or status} while {what}")
        if code == "NoSuchEntity":
            return NotFoundError(f"AWS NoSuchEntity while {what}")
        return PermanentError(f"AWS {code or status} while {what}")
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError,
                        botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError)):
        return TransientError(f"AWS unreachable while {what}: {type(exc).__name__}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return PermanentError(f"no AWS credentials for the rotator while {what}")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return PermanentError(f"AWS client error while {what}: {type(exc).__name__}")
    return exc


def _aws(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Exception as exc:
        translated = _translate(exc, what)
        if translated is exc:
            raise
        raise translated from None


class AwsIamAccessKeyProvider(Provider):
    kind: ClassVar[str] = "aws.iam_access_key"
    scope_params: ClassVar[Mapping[str, str]] = {"user_name": "aws_users"}
    params_model: ClassVar[type[BaseModel]] = AwsIamParams
    live_fields: ClassVar[tuple[str, ...]] = ("access_key_id", "secret_access_key")
    verify_budget: ClassVar[timedelta] = timedelta(seconds=45)
    can_list: ClassVar[bool] = True
    is_marking_atomic: ClassVar[bool] = False
    reports_key_use: ClassVar[bool] = True

    params: AwsIamParams

    # -- clients -----------------------------------------------------------------

    def _session(self) -> tuple[Any, datetime | None]:  # a boto3 Session
        import boto3.session

        # The rotator's own AWS secrets, and an assumed role's, are masked too.
        self.context.register_secret(os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN"))
        base = boto3.session.Session(region_name=self.params.region)
        if self.params.role_arn is None:
            return base, None
        sts = base.client("sts", config=_boto_config())
        creds = _aws(
            f"assuming {self.params.role_arn}",
            lambda: sts.assume_role(RoleArn=self.params.role_arn, RoleSessionName="rotator")["Credentials"],
        )
        self.context.register_secret(creds.get("SecretAccessKey"), creds.get("SessionToken"))
        session = boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=self.params.region,
        )
        return session, creds["Expiration"]

    @property
    def iam(self) -> Any:
        """An IAM client shared by every credential with the same identity:
        a boto3 client costs megabytes, and thousands of credentials must
        not hold one each. Assumed-role clients are renewed 5 min early.
        Made outside the cache's lock (assuming a role is a call to AWS);
        threads wanting the same identity wait for its one maker."""
        key = (self.params.region, self.params.role_arn, *(os.environ.get(v) for v in _IDENTITY_ENV))
        cached = self._cached_iam(key)
        if cached is not None:
            return cached
        with _CLIENTS_LOCK:
            maker = _CLIENT_MAKERS.setdefault(key, threading.Lock())
        with maker:
            cached = self._cached_iam(key)
            if cached is None:
                session, expires = self._session()
                client = session.client("iam", config=_boto_config())
                with _CLIENTS_LOCK:
                    _CLIENTS[key] = (client, expires)
                cached = client
            return cached

    def _cached_iam(self, key: tuple[str | None, ...]) -> Any:
        with _CLIENTS_LOCK:
            cached = _CLIENTS.get(key)
        if cached is None or (cached[1] is not None and cached[1] - self.context.clock.now() < timedelta(minutes=5)):
            return None
        return cached[0]

    # -- the provider interface -----------------------------------------------

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        import botocore.exceptions

        user = self.params.user_name
        iam = self.iam

        def create() -> Any:
            try:
                return iam.create_access_key(UserName=user)["AccessKey"]
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "LimitExceeded":
                    return None  # refused before acting: the user has its 2 keys
                raise

        # Create first: a listing before every create would cost a call per
        # rotation for what AWS checks anyway. A lost response is the
        # engine's to handle (not retried: the next step sweeps). Right before
        # it, the issuing tag: a key this create makes and no mark names yet is
        # told by it from one a person made, with the state record lost too.
        note = issuing_tag(ctx, self.context.clock.now())
        _aws(f"tagging IAM user {user} as issuing", lambda: iam.tag_user(UserName=user, Tags=[note]))
        created = _aws(f"creating an access key for {user}", create)
        if created is None:
            keys = _aws(f"listing access keys of {user}", lambda: iam.list_access_keys(UserName=user)["AccessKeyMetadata"])
            if len(keys) < 2:  # one went meanwhile: AWS's answer stands, as any refusal would
                raise PermanentError(f"AWS LimitExceeded while creating an access key for {user}")
            ids = frozenset(k["AccessKeyId"] for k in keys)
            unmanaged = sorted(ids - ctx.managed_key_ids)
            detail = (
                f"unmanaged key(s) {', '.join(unmanaged)} — the rotator never deletes a key it did not make; remove it yourself"
                if unmanaged else "both are the rotator's and the older one is still in its grace period"
            )
            raise NoCapacityError(f"IAM user {user} already has 2 access keys (AWS's limit): {detail}", blocking_key_ids=ids)
        key_id, secret = created["AccessKeyId"], created["SecretAccessKey"]
        self.context.register_secret(secret)
        crashpoint("aws-after-create")  # tests: a crash between "create" and "mark"
        try:
            _aws(
                f"tagging access key {key_id}",
                lambda: iam.tag_user(UserName=user, Tags=[{"Key": key_id, "Value": mark_value(ctx.credential, ctx.rotation_id)},
                                                          issuing_cleared(ctx.credential)]),
            )
        except (TransientError, PermanentError):
            # Unmarked, it could be mistaken for a key the rotator did not make.
            _aws(f"deleting untagged key {key_id}", lambda: iam.delete_access_key(UserName=user, AccessKeyId=key_id))
            raise
        return IssuedCredential(
            key_id=key_id,
            data={"access_key_id": key_id, "secret_access_key": secret},
            # The secret rides in the handle (kept in Vault only) so that
            # is_revoked can confirm with the old key itself.
            handle={"user_name": user, "access_key_id": key_id, "secret_access_key": secret},
        )

    def _sts_template(self) -> Any:
        """The STS client of this region and endpoint settings: made once, it
        resolved the endpoint and holds the pooled HTTP session; it never
        signs (each check signs with its own key). CPU only under the lock."""
        global _STS_SESSION
        import botocore.session

        key = (self.params.region, *(os.environ.get(v) for v in _STS_ENV))
        with _STS_LOCK:
            template = _STS_TEMPLATES.get(key)
            if template is None:
                if _STS_SESSION is None:
                    _STS_SESSION = botocore.session.get_session()
                # Explicit (unused) credentials: no credential chain is looked up for a client that never signs.
                template = _STS_SESSION.create_client("sts", region_name=self.params.region, aws_access_key_id="unused",
                                                      aws_secret_access_key="unused", config=_boto_config())
                _STS_TEMPLATES[key] = template
            return template

    def _caller_identity(self, access_key_id: str, secret_access_key: str) -> dict[str, Any]:
        """One GetCallerIdentity signed with the given key (not the rotator's
        own identity). Raises botocore's ClientError for an error answer, as a
        client would."""
        import botocore.exceptions
        import botocore.parsers
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        template = self._sts_template()
        url = template.meta.endpoint_url
        # The legacy global endpoint (AWS_STS_REGIONAL_ENDPOINTS=legacy) signs for us-east-1.
        region = "us-east-1" if url.rstrip("/").endswith("://sts.amazonaws.com") else template.meta.region_name
        request = AWSRequest(method="POST", url=url.rstrip("/") + "/", data=_GET_CALLER_IDENTITY,
                             headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(Credentials(access_key_id, secret_access_key), "sts", region).add_auth(request)
        response = template._endpoint.http_session.send(request.prepare())  # the template's pool, proxies and CA bundle
        operation = template.meta.service_model.operation_model("GetCallerIdentity")
        parsed = botocore.parsers.create_parser("query").parse(
            {"status_code": response.status_code, "headers": response.headers, "body": response.content}, operation.output_shape)
        if response.status_code >= 300:
            raise botocore.exceptions.ClientError(parsed, "GetCallerIdentity")
        return parsed

    def verify(self, credential: IssuedCredential) -> None:
        import botocore.exceptions

        try:
            identity = self._caller_identity(credential.data["access_key_id"], credential.data["secret_access_key"])
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied"}:
                # What a key that has not propagated yet looks like, too.
                raise TransientError(f"STS does not accept key {credential.key_id} yet ({code})") from None
            raise _translate(exc, f"verifying key {credential.key_id}") from None
        except Exception as exc:
            raise _translate(exc, f"verifying key {credential.key_id}") from None
        arn = identity.get("Arn", "")
        resource = arn.split(":", 5)[-1]  # user/NAME or user/PATH/NAME
        if not (resource.startswith("user/") and resource.rsplit("/", 1)[-1] == self.params.user_name):
            raise PermanentError(f"key {credential.key_id} authenticates as {arn}, not as user {self.params.user_name}")

    def retire_delay(self) -> timedelta | None:
        return self.params.delete_after_deactivation

    def deactivate(self, handle: Mapping[str, str]) -> None:
        key_id, user = handle["access_key_id"], handle["user_name"]
        try:
            _aws(f"deactivating {key_id}", lambda: self.iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive"))
        except NotFoundError:
            return  # already deleted: more than deactivated

    def revoke(self, handle: Mapping[str, str]) -> None:
        key_id, user = handle["access_key_id"], handle["user_name"]
        iam = self.iam
        try:
            _aws(f"deleting {key_id}", lambda: iam.delete_access_key(UserName=user, AccessKeyId=key_id))
        except NotFoundError:
            pass  # already gone
        try:
            _aws(f"untagging {key_id}", lambda: iam.untag_user(UserName=user, TagKeys=[key_id]))
        except NotFoundError:
            pass

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        """Revoked means STS rejects the old key itself (`InvalidClientTokenId`).

        A deleted or deactivated key keeps working for seconds (IAM is
        eventually consistent), so ListAccessKeys no longer naming it is not
        enough. Only a handle without the secret (records made before it rode
        in the handle) falls back to ListAccessKeys.
        """
        import botocore.exceptions

        key_id, secret = handle["access_key_id"], handle.get("secret_access_key")
        if secret:
            try:
                self._caller_identity(key_id, secret)
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in {"InvalidClientTokenId", "SignatureDoesNotMatch"}:
                    return True
                raise _translate(exc, f"checking whether {key_id} is still accepted") from None
            except Exception as exc:
                raise _translate(exc, f"checking whether {key_id} is still accepted") from None
            return False  # STS still accepts it
        user = handle["user_name"]
        keys = _aws(f"listing access keys of {user}", lambda: self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"])
        return key_id not in {k["AccessKeyId"] for k in keys}

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        key_id = data.get("access_key_id")
        if not key_id:
            return None
        return ProviderKey(key_id=key_id, handle={"user_name": self.params.user_name, "access_key_id": key_id})

    def last_used(self, handle: Mapping[str, str]) -> datetime | None:
        # AWS updates this within hours, not seconds (docs/OPERATIONS.md, "quiet").
        key_id = handle["access_key_id"]
        try:
            used = _aws(f"reading last use of {key_id}", lambda: self.iam.get_access_key_last_used(AccessKeyId=key_id))
        except NotFoundError:
            return None  # gone already: nobody can use it
        return used.get("AccessKeyLastUsed", {}).get("LastUsedDate")

    def list_key_ids(self) -> list[str]:
        """One ListAccessKeys: no tags and no last use, which `list_keys` reads for each key."""
        user = self.params.user_name
        iam = self.iam
        keys = _aws(f"listing access keys of {user}", lambda: iam.list_access_keys(UserName=user)["AccessKeyMetadata"])
        return [key["AccessKeyId"] for key in keys]

    def list_keys_without_use(self) -> list[ProviderKey]:
        """ListAccessKeys + ListUserTags: no GetAccessKeyLastUsed per key."""
        user = self.params.user_name
        iam = self.iam
        keys = _aws(f"listing access keys of {user}", lambda: iam.list_access_keys(UserName=user)["AccessKeyMetadata"])
        tags = _aws(f"listing tags of {user}", lambda: iam.list_user_tags(UserName=user)["Tags"])
        marks = {t["Key"]: parse_mark(t["Value"]) for t in tags}
        notes = parse_issuing({t["Key"]: t["Value"] for t in tags})
        return [
            ProviderKey(key_id=key["AccessKeyId"], handle={"user_name": user, "access_key_id": key["AccessKeyId"]},
                        created_at=key.get("CreateDate"), active=key.get("Status") == "Active", mark=marks.get(key["AccessKeyId"]),
                        issuing=() if marks.get(key["AccessKeyId"]) else notes)
            for key in keys
        ]

    def list_keys(self) -> list[ProviderKey]:
        iam = self.iam
        out = []
        for key in self.list_keys_without_use():
            used = _aws(f"reading last use of {key.key_id}", lambda k=key.key_id: iam.get_access_key_last_used(AccessKeyId=k))
            out.append(dataclasses.replace(key, last_used_at=used.get("AccessKeyLastUsed", {}).get("LastUsedDate")))
        return out
