"""The user tags `aws.iam_access_key` sets on an IAM user, and how they read back.

- a key's mark: the tag whose key is the access key id (the convention the
  AWS console uses for key descriptions), valued `rotator:CREDENTIAL:ROTATION_ID`;
- the issuing tag, set right before each create: `rotator-issuing:CREDENTIAL`
  valued `ROTATION_ID AT KEY_ID...`, emptied by the call that sets the new
  key's mark (docs/CONTRACT-NOTES.md, "an AWS key made, not yet tagged").

IAM's limits (API reference `Tag`): a key of 1-128 and a value of 0-256
characters of letters, digits, spaces and `_.:/=+-@`; 50 tags per user.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from rotator.core.clock import parse_rfc3339, to_rfc3339
from rotator.core.provider import IssueContext, IssuingNote, KeyMark

MARK_PREFIX = "rotator:"
ISSUING_PREFIX = "rotator-issuing:"  # + the credential's name (≤ 63 of [a-z0-9._-]): a tag key of ≤ 79 characters


def mark_value(credential: str, rotation_id: str) -> str:
    return f"{MARK_PREFIX}{credential}:{rotation_id}"


def parse_mark(value: str | None) -> KeyMark | None:
    if not value or not value.startswith(MARK_PREFIX):
        return None
    credential, _, rotation_id = value.removeprefix(MARK_PREFIX).rpartition(":")
    return KeyMark(credential, rotation_id) if credential and rotation_id else None


def issuing_tag(ctx: IssueContext, at: datetime) -> dict[str, str]:
    """The user tag set right before a create: `rotator-issuing:CREDENTIAL` = `ROTATION_ID AT KEY_ID...`.
    IAM's tag alphabet (letters, digits, spaces, `_.:/=+-@`) and sizes (key ≤ 128, value ≤ 256): a
    rotation id (25), a time to the second (20) and the user's keys before the create (at most 2 of 20)."""
    value = " ".join([ctx.rotation_id, to_rfc3339(at), *sorted(ctx.preexisting_key_ids)])
    return {"Key": ISSUING_PREFIX + ctx.credential, "Value": value}


def issuing_cleared(credential: str) -> dict[str, str]:
    """The same tag emptied, set by the call that marks the new key: nothing is being created any more."""
    return {"Key": ISSUING_PREFIX + credential, "Value": ""}


def parse_issuing(tags: Mapping[str, str]) -> tuple[IssuingNote, ...]:
    """The issuing notes among a user's tags (key -> value); empty or malformed ones say nothing."""
    notes = []
    for key, value in tags.items():
        parts = value.split()
        if not key.startswith(ISSUING_PREFIX) or len(parts) < 2:
            continue
        try:
            at = parse_rfc3339(parts[1])
        except ValueError:
            continue
        notes.append(IssuingNote(key.removeprefix(ISSUING_PREFIX), parts[0], at, frozenset(parts[2:])))
    return tuple(notes)
