"""The pure state machine: records in, actions and records out, no I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from rotator.core import machine as m
from rotator.core import transitions
from rotator.core.schedule import Schedule
from rotator.core.provider import IssuedCredential
from rotator.core.state import StateRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = m.Policy(schedule=Schedule(every=timedelta(days=30)), grace=timedelta(hours=24), retire_delay=timedelta(days=7), fingerprint="f1")
NO_DEACTIVATION = m.Policy(schedule=POLICY.schedule, grace=POLICY.grace, retire_delay=None, fingerprint="f1")


def cred(n: int) -> IssuedCredential:
    return IssuedCredential(key_id=f"K{n}", data={"access_key_id": f"K{n}", "secret_access_key": f"s{n}"}, handle={"id": f"K{n}"})


def rotate(record: StateRecord, n: int, now: datetime, policy: m.Policy = POLICY, *, revoke_now: bool = False) -> StateRecord:
    """Drive one successful rotation through every phase."""
    reason = "manual" if revoke_now else "schedule"
    record = transitions.apply(record, m.Started(f"r{n}", reason, revoke_now), policy, now)
    assert m.next_action(record, policy, now) in (m.Issue(), *[m.Deactivate(e.key.key_id) for e in record.retiring], *[m.Revoke(e.key.key_id) for e in record.retiring])
    record = transitions.apply(record, m.IssueBegun(), policy, now)
    record = transitions.apply(record, m.Issued(cred(n)), policy, now)
    assert m.next_action(record, policy, now) == m.Verify()
    record = transitions.apply(record, m.Verified(1), policy, now)
    assert m.next_action(record, policy, now) == m.Promote()
    return transitions.apply(record, m.Promoted(live_version=n, jitter_seconds=0.0), policy, now)


def fresh() -> StateRecord:
    return StateRecord.new("ci", "aws.iam_access_key")


def test_a_credential_never_rotated_is_due_at_once() -> None:
    """No record yet: the first rotation brings it under management."""
    assert m.next_action(fresh(), POLICY, T0) == m.StartRotation("schedule")


def test_happy_path_makes_the_new_key_current_only_after_verification() -> None:
    """Issued and verified credentials stay pending; Promoted makes them current."""
    record = transitions.apply(fresh(), m.Started("r1", "schedule"), POLICY, T0)
    record = transitions.apply(record, m.IssueBegun(), POLICY, T0)
    record = transitions.apply(record, m.Issued(cred(1)), POLICY, T0)
    assert record.current is None and record.pending and record.pending.phase == "issued"
    record = transitions.apply(record, m.Verified(3), POLICY, T0)
    assert record.current is None
    record = transitions.apply(record, m.Promoted(1, 0.0), POLICY, T0)
    assert record.current and record.current.key_id == "K1"
    assert record.pending is None and record.live_version == 1 and record.last_rotated_at == T0
    assert m.next_action(record, POLICY, T0 + DAY) is None


def test_previous_key_is_kept_for_grace_then_deactivated_then_revoked() -> None:
    """The superseded key lives `grace`, is deactivated, and deleted after the delay."""
    record = rotate(fresh(), 1, T0)
    t1 = T0 + timedelta(days=30)
    assert m.next_action(record, POLICY, t1) == m.StartRotation("schedule")
    record = rotate(record, 2, t1)
    assert [e.key.key_id for e in record.retiring] == ["K1"]
    assert m.next_action(record, POLICY, t1 + timedelta(hours=23, minutes=59)) is None
    assert m.next_action(record, POLICY, t1 + timedelta(hours=24)) == m.Deactivate("K1")
    record = transitions.apply(record, m.Deactivated("K1"), POLICY, t1 + timedelta(hours=24))
    assert m.next_action(record, POLICY, t1 + timedelta(days=7)) is None
    assert m.next_action(record, POLICY, t1 + timedelta(days=8)) == m.Revoke("K1")
    record = transitions.apply(record, m.Revoked("K1"), POLICY, t1 + timedelta(days=8))
    assert record.retiring == [] and record.current and record.current.key_id == "K2"


def test_providers_without_deactivation_revoke_at_end_of_grace() -> None:
    """With no deactivated stage, the end of grace means revoke."""
    record = rotate(rotate(fresh(), 1, T0, NO_DEACTIVATION), 2, T0 + timedelta(days=30), NO_DEACTIVATION)
    assert m.next_action(record, NO_DEACTIVATION, T0 + timedelta(days=31)) == m.Revoke("K1")


def test_the_live_key_is_never_retired() -> None:
    """Even a corrupt record listing the live key as retiring yields no action on it."""
    record = rotate(rotate(fresh(), 1, T0), 2, T0 + timedelta(days=30))
    bad = record.model_copy(update={"retiring": [record.retiring[0].model_copy(update={"key": record.current})]})
    assert m.next_action(bad, POLICY, T0 + timedelta(days=40)) is None


def test_revoke_now_skips_grace_and_the_deactivation_delay() -> None:
    """Incident response: everything older than the new key goes at once."""
    record = rotate(fresh(), 1, T0)
    record = rotate(record, 2, T0 + DAY, revoke_now=True)
    now = T0 + DAY
    assert m.next_action(record, POLICY, now) == m.Deactivate("K1")
    record = transitions.apply(record, m.Deactivated("K1"), POLICY, now)
    assert m.next_action(record, POLICY, now) == m.Revoke("K1")


def test_revoke_now_also_hurries_keys_still_in_grace() -> None:
    """A manual revoke-now rotation retires older keys before issuing."""
    record = rotate(rotate(fresh(), 1, T0), 2, T0 + timedelta(days=30))
    now = T0 + timedelta(days=30, hours=1)
    record = transitions.apply(record, m.Started("r3", "manual", True), POLICY, now)
    assert m.next_action(record, POLICY, now) == m.Deactivate("K1")


def test_issue_failure_backs_off_then_sweeps_orphans_before_issuing_again() -> None:
    """A failed mint may have minted: the next attempt sweeps first."""
    record = transitions.apply(fresh(), m.Started("r1", "schedule"), POLICY, T0)
    record = transitions.apply(record, m.IssueBegun(), POLICY, T0)
    record = transitions.apply(record, m.Failed("issue", "AWS Throttling", transient=True), POLICY, T0)
    assert record.attempts == 1 and record.next_attempt_at == T0 + timedelta(seconds=30)
    assert m.next_action(record, POLICY, T0 + timedelta(seconds=10)) is None
    assert m.next_action(record, POLICY, T0 + timedelta(seconds=30)) == m.SweepOrphans()
    record = transitions.apply(record, m.Swept(), POLICY, T0 + timedelta(seconds=30))
    assert m.next_action(record, POLICY, T0 + timedelta(seconds=30)) == m.Issue()


def test_a_crash_while_issuing_is_followed_by_a_sweep() -> None:
    """A record left in `issuing` resumes with an orphan sweep."""
    record = transitions.apply(transitions.apply(fresh(), m.Started("r1", "schedule"), POLICY, T0), m.IssueBegun(), POLICY, T0)
    assert m.next_action(record, POLICY, T0) == m.SweepOrphans()


def test_failed_verification_rolls_back_and_leaves_current_alone() -> None:
    """A new credential that fails verification is revoked; the live one stays."""
    record = rotate(fresh(), 1, T0)
    t1 = T0 + timedelta(days=30)
    record = transitions.apply(record, m.Started("r2", "schedule"), POLICY, t1)
    record = transitions.apply(transitions.apply(record, m.IssueBegun(), POLICY, t1), m.Issued(cred(2)), POLICY, t1)
    record = transitions.apply(record, m.Failed("verify", "STS rejects it", transient=True), POLICY, t1)
    assert record.pending and record.pending.phase == "rolling_back"
    assert m.next_action(record, POLICY, t1) == m.RollBack()
    record = transitions.apply(record, m.RolledBack(), POLICY, t1)
    assert record.pending is None and record.current and record.current.key_id == "K1"
    assert record.attempts == 1 and record.next_attempt_at == t1 + timedelta(seconds=30)
    assert record.retiring == []
    assert m.next_action(record, POLICY, t1 + timedelta(seconds=29)) is None
    assert m.next_action(record, POLICY, t1 + timedelta(seconds=30)) == m.StartRotation("schedule")


def test_permanent_failure_blocks_until_the_file_changes_or_a_manual_rotation() -> None:
    """A state problem is not retried on a timer."""
    record = transitions.apply(transitions.apply(fresh(), m.Started("r1", "schedule"), POLICY, T0), m.IssueBegun(), POLICY, T0)
    record = transitions.apply(record, m.Failed("issue", "LimitExceeded", transient=False), POLICY, T0)
    assert record.blocked_fingerprint == "f1" and record.next_attempt_at is None
    # The failed issue may have minted: swept once, blocked or not (sim F210); then the block holds.
    assert m.next_action(record, POLICY, T0) == m.SweepOrphans()
    assert m.next_wake_at(record, POLICY) is not None
    changed = m.Policy(POLICY.schedule, POLICY.grace, POLICY.retire_delay, fingerprint="f2")
    assert m.next_action(record, changed, T0) == m.SweepOrphans()
    assert m.next_action(record, POLICY, T0, m.Request()) == m.SweepOrphans()
    record = transitions.apply(record, m.Swept(()), POLICY, T0)
    assert record.blocked_fingerprint == "f1" and record.pending is not None and record.pending.phase == "intent"
    assert m.next_action(record, POLICY, T0 + timedelta(days=365)) is None
    assert m.next_wake_at(record, POLICY) is None
    assert m.next_action(record, changed, T0) == m.Issue()
    assert m.next_action(record, POLICY, T0, m.Request()) == m.Issue()


def test_a_blocked_rotations_sweep_that_fails_for_good_waits_like_any_block() -> None:
    """A denied listing blocks the sweep itself: it is not run again on every tick (F210's sweep is once)."""
    record = transitions.apply(transitions.apply(fresh(), m.Started("r1", "schedule"), POLICY, T0), m.IssueBegun(), POLICY, T0)
    record = transitions.apply(record, m.Failed("sweep", "AccessDenied", transient=False), POLICY, T0)
    assert record.blocked_fingerprint == "f1" and record.pending is not None and record.pending.phase == "issuing"
    assert m.next_action(record, POLICY, T0 + timedelta(days=365)) is None
    assert m.next_wake_at(record, POLICY) is None
    assert m.next_action(record, POLICY, T0, m.Request()) == m.SweepOrphans()


def test_failed_revocations_are_retried_with_backoff() -> None:
    """Revocation is retried until the provider confirms."""
    record = rotate(rotate(fresh(), 1, T0, NO_DEACTIVATION), 2, T0 + timedelta(days=30), NO_DEACTIVATION)
    now = T0 + timedelta(days=31)
    for attempt in range(1, 12):
        assert m.next_action(record, NO_DEACTIVATION, now) == m.Revoke("K1")
        record = transitions.apply(record, m.Failed("revoke", "503", transient=True, key_id="K1"), NO_DEACTIVATION, now)
        entry = record.retiring[0]
        assert entry.attempts == attempt
        assert entry.next_attempt_at is not None
        assert entry.next_attempt_at - now <= transitions.BACKOFF_CAP
        now = entry.next_attempt_at
    assert record.retiring[0].attempts == 11


def test_backoff_doubles_and_caps_and_honours_retry_after() -> None:
    """30 s, 60 s, 120 s ... never above an hour, never below Retry-After."""
    assert [transitions.backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert transitions.backoff(40) == transitions.BACKOFF_CAP
    assert transitions.backoff(1, retry_after=600).total_seconds() == 600


def test_backoff_after_thousands_of_failures_is_the_cap_not_an_overflow() -> None:
    """A key refused as live for weeks fails its retirement hourly: 30 s * 2**n overflowed timedelta at n ~ 45."""
    assert [transitions.backoff(n) for n in (46, 1_000, 10**6)] == [transitions.BACKOFF_CAP] * 3


def test_a_missed_due_time_rotates_once_not_once_per_period() -> None:
    """After a week down with daily rotation, one rotation, then the normal cadence."""
    daily = m.Policy(Schedule(every=DAY), timedelta(hours=1), None, "d")
    record = rotate(fresh(), 1, T0, daily)
    back = T0 + timedelta(days=8)
    assert m.next_action(record, daily, back) == m.StartRotation("schedule")
    record = rotate(record, 2, back, daily)
    assert m.next_wake_at(record, daily) == back + timedelta(hours=1)  # the grace end of K1
    record = transitions.apply(record, m.Revoked("K1"), daily, back + timedelta(hours=1))
    assert m.next_action(record, daily, back + timedelta(hours=23)) is None
    assert m.next_wake_at(record, daily) == back + DAY


def test_next_wake_at_never_hides_work() -> None:
    """Whenever an action is due, the wake time is not in the future."""
    records = [fresh(), rotate(fresh(), 1, T0), rotate(rotate(fresh(), 1, T0), 2, T0 + timedelta(days=30))]
    for record in records:
        for hours in range(0, 24 * 70, 7):
            now = T0 + timedelta(hours=hours)
            if m.next_action(record, POLICY, now) is not None:
                wake = m.next_wake_at(record, POLICY)
                assert wake is not None and wake <= now


def test_records_round_trip_through_vault_json() -> None:
    """A record survives serialisation to KV data unchanged."""
    record = rotate(rotate(fresh(), 1, T0), 2, T0 + timedelta(days=30))
    back = StateRecord.from_vault(record.to_vault())
    assert back.write_id and back.model_copy(update={"write_id": None}) == record
    assert record.to_vault()["write_id"] != record.to_vault()["write_id"]  # new at every write (sim F186)


def test_record_repr_holds_no_secret() -> None:
    """Printing a record can never print a stashed secret."""
    record = transitions.apply(transitions.apply(transitions.apply(fresh(), m.Started("r1", "schedule"), POLICY, T0), m.IssueBegun(), POLICY, T0), m.Issued(cred(7)), POLICY, T0)
    assert "s7" not in repr(record) and "s7" not in str(record) and "s7" not in str(record.summary())


@pytest.mark.parametrize("phase_outcomes", [[], [m.IssueBegun()], [m.IssueBegun(), m.Issued(cred(5))]])
def test_manual_request_resumes_a_pending_rotation(phase_outcomes: list) -> None:
    """`rotate NAME` while a rotation is unfinished finishes that one first."""
    record = transitions.apply(fresh(), m.Started("r1", "schedule"), POLICY, T0)
    for outcome in phase_outcomes:
        record = transitions.apply(record, outcome, POLICY, T0)
    action = m.next_action(record, POLICY, T0, m.Request())
    assert not isinstance(action, m.StartRotation)


def test_a_grace_read_on_another_clock_ends_the_skew_allowance_later() -> None:
    """Sim F11: two hosts' clocks differ by up to the allowance. A grace
    measured on one host's clock and read on another's ends the allowance
    later; on the clock that measured it, on time; `--revoke-now`, at once."""
    allowance = timedelta(minutes=2)
    here = dataclasses.replace(NO_DEACTIVATION, skew_allowance=allowance, clock="boot-a")
    there = dataclasses.replace(here, clock="boot-b")
    unknown = dataclasses.replace(here, clock=None)
    t1 = T0 + timedelta(days=30)
    record = rotate(rotate(fresh(), 1, T0, here), 2, t1, here)  # promoted on boot-a's clock
    end = t1 + here.grace
    assert record.retiring[0].clock == "boot-a" and record.retiring[0].revoke_after == end
    assert m.next_action(record, here, end - timedelta(seconds=1)) is None
    assert m.next_action(record, here, end) == m.Revoke("K1")
    for other in (there, unknown):
        assert m.next_action(record, other, end + allowance - timedelta(seconds=1)) is None
        assert m.next_action(record, other, end + allowance) == m.Revoke("K1")
        assert m.next_wake_at(record, other) == end + allowance
    urgent = rotate(record, 3, t1 + DAY, here, revoke_now=True)
    assert {m.next_action(urgent, there, t1 + DAY)} <= {m.Revoke("K1"), m.Revoke("K2")}


def test_the_grace_clock_is_the_live_writes() -> None:
    """The grace runs from the live write, on the clock that read it: a
    promotion finished by another process (after a crash) keeps that clock."""
    a = dataclasses.replace(NO_DEACTIVATION, skew_allowance=timedelta(minutes=2), clock="boot-a")
    b = dataclasses.replace(a, clock="boot-b")
    record = rotate(fresh(), 1, T0, a)
    for outcome, policy in ((m.Started("r2", "schedule"), a), (m.IssueBegun(), a), (m.Issued(cred(2)), a), (m.Verified(1), a),
                            (m.LiveWritten(2), a)):
        record = transitions.apply(record, outcome, policy, T0 + DAY)
    record = transitions.apply(record, m.Promoted(2, 0.0), b, T0 + DAY + timedelta(minutes=5))
    assert record.retiring[0].clock == "boot-a" and record.retiring[0].revoke_after == T0 + DAY + a.grace
