"""One simulated world: a true clock, one KV v2 model, one provider service,
the credential files, and the processes (daemon replicas, `rotator rotate`
runs) that act on them — each a real `rotator.engine.reconcile.Engine`.

Everything runs in one thread and is deterministic for a given schedule: a process "runs" when a
step says so, a pause is another process running inside one call of the first, and time moves only
when a step advances it or a process sleeps (retries sleep on the injected clock).

Every Vault and provider call passes through `_kv_boundary` or `_provider_boundary`: the step's fault
plan is applied there, and the call-time invariants (`rotator.testing.sim.invariants`) are checked
just before each effect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from rotator.config.spec import CredentialSpec, LoadedCredential
from rotator.core.actions import Request
from rotator.core.errors import RotatorError
from rotator.core.holder import Identity
from rotator.core.state import StateRecord
from rotator.engine.adoption import adopt
from rotator.engine.fileless import blocked_since, fileless_credential, has_work, look_due, looked_lately
from rotator.engine.reconcile import Engine
from rotator.engine.results import EngineOptions, ReconcileResult
from rotator.testing.sim import invariants
from rotator.testing.sim.clocks import Hosts, ProcessClock, TrueClock
from rotator.testing.sim.facts import MOUNT, STATE_PREFIX, FileSpec, RevokeNow, RunResult, Tracking, Violation  # noqa: F401 (re-exported)
from rotator.testing.sim.faults import CallFault, SimCrash, error_for
from rotator.testing.sim.kv import KvModel
from rotator.testing.sim.lineage import Lineage
from rotator.testing.sim.providers import KINDS
from rotator.testing.sim.service import Service, bind

T = TypeVar("T")
LEASE_SECONDS = 300.0
# The engines' clock skew allowance. Skew steps keep every two processes'
# clocks within it (each replica within half of it of the true time): the
# guarantee holds for skew up to the allowance (docs/RELIABILITY.md).
SKEW_ALLOWANCE = 120.0
SLOTS = ("r0", "r1")


@dataclass
class Process:
    actor: str
    engine: Engine
    # Removed files' idle records compared with their live path, by version (Engine.reconcile(look_behind=True)).
    looked_behind: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # and when (fileless.LOOK_AGAIN)
    blocked_since: dict[str, datetime | None] = field(default_factory=dict)  # blocked records' next look (fileless.blocked_since)


class World:
    def __init__(self, kind: str) -> None:
        self.kind = KINDS[kind]
        self.clock = TrueClock()
        self.kv = KvModel()
        self.service: Service = self.kind.make_service(self.clock.now)
        self.service.boundary = self._provider_boundary
        self.provider_cls = bind(self.kind.provider_cls, self.service)
        example = CredentialSpec.model_validate(self._spec_doc(FileSpec("x", "apps/x", dict(self.kind.params))))
        self.grace = example.grace
        self.every = example.schedule.every or timedelta(days=1)
        self.files: dict[str, FileSpec] = {"app": FileSpec("app", "apps/app", dict(self.kind.params))}
        self.deleted: dict[str, FileSpec] = {}
        self.hosts = Hosts(SLOTS)
        self.offsets = self.hosts.offsets
        self.procs: dict[str, Process] = {}
        self.incarnations: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.violations: list[Violation] = []
        self.stale_effects: dict[str, int] = {}  # effects a process made since it last held a lease
        self.step_index = 0
        self.tracked: dict[str, Tracking] = {"apps/app": Tracking()}
        self.superseded_at: dict[str, datetime] = {}
        self.revoke_now: list[RevokeNow] = []
        self.renames = 0
        self.last_rename: tuple[str, str] | None = None  # (old name, new name)
        self.adoptions = 0
        self.unrecoverable: set[str] = set()  # keys no file nor record names any more (invariants._forgotten_by_all)
        self.lines = Lineage()  # whose each key is, for revoke-now's targets
        self.live_writes = 0  # rotator writes that landed on a live path
        self._loaded: dict[tuple[str, str, str], LoadedCredential] = {}
        self._records: dict[str, StateRecord | None] = {}
        self._records_now: dict[str, StateRecord] = {}
        self._records_at = -1
        self._live_at: tuple[int, bool, int, int] | None = None
        self._live_now: dict[str, str | None] = {}
        self._fileless_at: tuple[int, frozenset[str]] | None = None
        self._fileless_now: list[LoadedCredential] = []
        self._fileless_idle: list[tuple[LoadedCredential, int]] = []
        # the fault plan of the step in progress
        self._plan: dict[int, CallFault] = {}
        self._plan_actor: str | None = None
        self._calls = 0
        self._pause: tuple[str, int, float, str] | None = None
        self._vault_calls = 0

    # -- credential files --------------------------------------------------------

    def _spec_doc(self, spec: FileSpec) -> dict[str, Any]:
        return {
            "name": spec.stem, "provider": self.kind.provider_cls.kind, "owner": "sim",
            "schedule": {"every": self.kind.every}, "grace": self.kind.grace,
            "vault": {"mount": MOUNT, "path": spec.path}, "params": spec.params,
        }

    def loaded(self) -> list[LoadedCredential]:
        out = []
        for spec in self.files.values():
            key = (spec.stem, spec.path, repr(sorted(spec.params.items())))
            cred = self._loaded.get(key)
            if cred is None:
                doc = self._spec_doc(spec)
                parsed = CredentialSpec.model_validate(doc)
                cred = LoadedCredential(parsed, self.provider_cls, self.provider_cls.params_model.model_validate(parsed.params))
                self._loaded[key] = cred
            out.append(cred)
        return out

    # -- processes ---------------------------------------------------------------

    def _new_process(self, slot: str) -> Process:
        self.incarnations[slot] += 1
        actor = f"{slot}.{self.incarnations[slot]}"
        if slot == "cli" and self._plan_actor == "cli-next":
            self._plan_actor = actor  # the step's faults are this run's
        offset_slot = slot if slot in self.offsets else None
        clock = ProcessClock(self.clock, actor, lambda: self.offsets.get(offset_slot, 0.0) if offset_slot else 0.0)
        store = self.kv.view(lambda op, mount, path, effect, mutating: self._kv_boundary(actor, op, mount, path, effect, mutating))
        # Each slot is a host of its own (its own clock); its incarnations in one boot share that clock.
        identity = Identity(holder=actor, host=f"sim-{slot}", boot_id=self.hosts.boot_id(slot), pid_namespace=None, pid=0,
                            start_ticks=None)
        options = EngineOptions(state_mount=MOUNT, state_prefix=STATE_PREFIX, lease_seconds=LEASE_SECONDS, clock_skew_allowance=SKEW_ALLOWANCE)
        engine = Engine(store, options=options, clock=clock, holder=actor, identity=identity)  # type: ignore[arg-type]
        engine.configured = lambda: frozenset(c.spec.name for c in self.loaded())  # every file loads here
        return Process(actor, engine)

    def set_skew(self, slot: str, seconds: float) -> None:
        """Set a host's clock `seconds` off true time: a reboot (memory gone) once a process ran there."""
        if self.hosts.set_offset(slot, seconds, booted=bool(self.incarnations[slot])):
            self.procs.pop(slot, None)

    def process(self, slot: str) -> Process:
        proc = self.procs.get(slot)
        if proc is None:
            proc = self.procs[slot] = self._new_process(slot)
        return proc

    def tick(self, slot: str) -> None:
        """A daemon replica's pass: every credential it has a file for, then the records whose file
        was removed (as the daemon does after a reload: `rotator.engine.fileless`)."""
        proc = self.process(slot)
        self.lines.observe({spec.stem: spec.path for spec in self.files.values()})
        stems = {spec.stem for spec in self.files.values()}
        for name in (n for n in self.kv.deleted_under(MOUNT, STATE_PREFIX) if n not in stems and not n.startswith("_")):
            # The daemon's scan for file-less records revives one whose latest version was deleted (RecordStore.revive).
            if self._run(proc, lambda n=name: proc.engine.records.revive(n), what=f"reviving {name}") is SimCrash:
                self.procs.pop(slot, None)
                return
        for cred in [*self.loaded(), *self.fileless()]:
            self.lines.acting_for[proc.actor] = name = cred.spec.name
            look = look_due(since := proc.blocked_since.get(name), proc.engine.clock.now())  # as the daemon (F223)
            result = self._run(proc, lambda c=cred, lb=look: proc.engine.reconcile(c, look_behind=lb), what=name)
            if result is SimCrash:
                self.procs.pop(slot, None)  # its memory is gone; a fresh engine starts next time
                return
            if isinstance(result, ReconcileResult) and result.status != "locked":
                proc.blocked_since[name] = blocked_since(since, result.record, proc.engine.policy_for(cred), proc.engine.clock.now(), looked=look)
        for cred, version in self.idle_fileless():
            if looked_lately(proc.looked_behind.get(cred.spec.name), version, self.clock.now()):
                continue
            self.lines.acting_for[proc.actor] = cred.spec.name
            result = self._run(proc, lambda c=cred: proc.engine.reconcile(c, look_behind=True), what=cred.spec.name)
            if result is SimCrash:
                self.procs.pop(slot, None)
                return
            if getattr(result, "status", None) == "idle":  # as the daemon: a failed look is tried again
                proc.looked_behind[cred.spec.name] = (version, self.clock.now())

    def fileless(self) -> list[LoadedCredential]:
        """The removed files' records with work left."""
        return self._scan_fileless()[0]

    def idle_fileless(self) -> list[tuple[LoadedCredential, int]]:
        """The removed files' records with none (not moved), each with its version: the daemon compares each
        version once with its live path."""
        return self._scan_fileless()[1]

    def _scan_fileless(self) -> tuple[list[LoadedCredential], list[tuple[LoadedCredential, int]]]:
        names = {spec.stem for spec in self.files.values()}
        stamp = (self.kv.generation, frozenset(names))
        if self._fileless_at != stamp:
            work: list[LoadedCredential] = []
            rest: list[tuple[LoadedCredential, int]] = []
            for name, record in self.records().items():
                if name in names or (record.moved_to is not None and not has_work(record)):
                    continue
                cred = fileless_credential(record, {self.provider_cls.kind: self.provider_cls})
                if cred is not None and has_work(record):
                    work.append(cred)
                elif cred is not None:
                    rest.append((cred, self.kv.current_version(MOUNT, f"{STATE_PREFIX}/{name}")))
            self._fileless_at, self._fileless_now, self._fileless_idle = stamp, work, rest
        return self._fileless_now, self._fileless_idle

    def rotate(self, revoke_now: bool) -> str:
        """`rotator rotate NAME [--revoke-now]`, once, as a process of its own."""
        creds = self.loaded()
        if not creds:
            return "unknown"
        proc = self._new_process("cli")
        self.lines.observe({spec.stem: spec.path for spec in self.files.values()})
        self.lines.acting_for[proc.actor] = name = creds[0].spec.name
        started = self.clock.now()
        request = None
        if revoke_now:
            request = RevokeNow(started, targets=frozenset(k.key_id for k in self.service.rotator_made() if k.created_at <= started))
            self.revoke_now.append(request)
        result = self._run(proc, lambda: proc.engine.reconcile(creds[0], request=Request(revoke_now=revoke_now)), what="rotate")
        status = "crashed" if result is SimCrash else getattr(result, "status", "error")
        if request is not None and status == "completed":
            request.completed_at = self.clock.now()
            # Its own credential's previous keys only, less the key it made live (rotator.testing.sim.lineage).
            request.targets = self.lines.targets(request.targets, name, proc.actor, self.records(), set(self._live_keys().values()))
        return status

    def adopt(self, name: str) -> str:
        """`rotator adopt NAME`, once, as its own process (the operator following the hint `status` shows)."""
        cred = next((c for c in self.loaded() if c.spec.name == name), None)
        if cred is None:
            return "unknown"
        proc = self._new_process("cli")
        self.lines.observe({spec.stem: spec.path for spec in self.files.values()})
        self.lines.acting_for[proc.actor] = name
        self.adoptions += 1
        result = self._run(proc, lambda: adopt(proc.engine, cred), what="adopt")
        if result is None or result is SimCrash:
            return "failed"
        return "adopted"  # the path stays excused from live-works until the rotator writes it again

    def needs_adoption(self) -> list[str]:
        """The credentials whose status tells the operator to run `rotator adopt NAME`."""
        names = {spec.stem for spec in self.files.values()}
        return sorted(name for name, record in self.records().items()
                      if name in names and record.last_error is not None and f"rotator adopt {name}" in record.last_error)

    def _run(self, proc: Process, fn: Callable[[], T], *, what: str) -> T | type[SimCrash] | None:
        try:
            return fn()
        except SimCrash:
            return SimCrash
        except RotatorError:  # Vault down while reading the record: the daemon logs it and goes on
            return None
        except Exception as exc:  # the daemon survives it too, but the step never completes: a bug
            self.violate("reconcile-raised", f"{proc.actor} reconciling {what} raised {type(exc).__name__}: {exc}")
            return None

    # -- running a step under a fault plan ------------------------------------------

    def with_plan(self, actor_slot: str, plan: tuple[CallFault, ...], fn: Callable[[], T],
                  pause: tuple[int, float, str] | None = None) -> T:
        actor = self.process(actor_slot).actor if actor_slot in SLOTS else "cli-next"
        self._plan = {f.index: f for f in plan}
        self._plan_actor = actor
        self._calls = 0
        self._vault_calls = 0
        self._pause = (actor, *pause) if pause else None  # type: ignore[assignment]
        try:
            return fn()
        finally:
            self._plan, self._plan_actor, self._pause = {}, None, None

    def _fault_for(self, actor: str) -> CallFault | None:
        if actor != self._plan_actor:
            return None
        index = self._calls
        self._calls += 1
        return self._plan.get(index)

    def _maybe_pause(self, actor: str) -> None:
        if self._pause is None or self._pause[0] != actor:
            return
        index = self._vault_calls
        self._vault_calls += 1
        _, at, seconds, other = self._pause
        if index != at:
            return
        self._pause = None
        self.faults["pause"] += 1
        saved = (self._plan, self._plan_actor)
        self._plan, self._plan_actor = {}, None
        self.clock.advance(seconds)
        if other == "cli":
            self.rotate(revoke_now=True)
        else:
            self.tick(other)
        self._plan, self._plan_actor = saved

    def _kv_boundary(self, actor: str, op: str, mount: str, path: str, effect: Callable[[], T], mutating: bool) -> T:
        self._maybe_pause(actor)
        fault = self._fault_for(actor)
        is_state = path.startswith(STATE_PREFIX + "/")
        if fault is not None and fault.kind == "cas" and not (op == "write" and is_state):
            fault = None
        if fault is not None:
            self.faults[fault.kind] += 1
            if fault.kind in ("fail", "429"):
                raise error_for(fault.kind, vault=True, op=f"{op} {mount}/{path}", retry_after=fault.retry_after)
            if fault.kind == "crash":
                raise SimCrash(f"{actor} crashed before {op} {path}")
            if fault.kind == "cas":
                self.kv.bump(mount, path)
        live = mutating and not is_state and path in self.tracked
        before = self._live_keys(retired=True) if live else None
        result = effect()  # a check-and-set write that loses raises here: it had no effect
        if is_state and op == "write":
            invariants.record_written(self, actor, path)
        if live:
            invariants.check_acting_holder(self, actor, f"{op} of {path}", kind="live-write" if op == "write" else "metadata")
        if live and op == "write":
            self._after_live_write(path, before or {})
        if live and op == "merge_metadata" and self.service.key_of(self.kv.peek(MOUNT, path)) is None:  # over hand-written data
            self.lines.described_over.setdefault(actor, set()).add(self.kv.peek_metadata(MOUNT, path).get("rotator-key-id") or "")
        if fault is not None and fault.kind == "lost":
            raise error_for("lost", vault=True, op=f"{op} {mount}/{path}")
        if fault is not None and fault.kind == "crash_after":
            raise SimCrash(f"{actor} crashed after {op} {path}")
        return result

    def _provider_boundary(self, actor: str, op: str, target: str | None, effect: Callable[[], T], mutating: bool) -> T:
        fault = self._fault_for(actor)
        if fault is not None and fault.kind == "cas":
            fault = None
        if fault is not None:
            self.faults[fault.kind] += 1
            if fault.kind in ("fail", "429"):
                raise error_for(fault.kind, vault=False, op=op,
                                retry_after=fault.retry_after if self.service.reports_retry_after else None)
            if fault.kind == "crash":
                raise SimCrash(f"{actor} crashed before {op}")
        if mutating:
            invariants.before_provider_effect(self, actor, op, target)
        known = set(self.service.keys) if op in invariants.CREATE_OPS else None
        result = effect()
        if known is not None:
            self.lines.minted(actor, set(self.service.keys) - known)
        if mutating:
            invariants.after_provider_effect(self, op)
        if fault is not None and fault.kind == "lost":
            raise error_for("lost", vault=False, op=op)
        if fault is not None and fault.kind == "crash_after":
            raise SimCrash(f"{actor} crashed after {op}")
        return result

    # -- what the invariants look at ---------------------------------------------------

    def _live_keys(self, *, retired: bool = False) -> dict[str, str | None]:
        """The key each live path's current version holds (with `retired`: also paths no file names now)."""
        stamp = (self.kv.generation, retired, len(self.tracked), sum(t.retired for t in self.tracked.values()))
        if self._live_at == stamp:
            return self._live_now
        out = {path: self.service.key_of(self.kv.peek(MOUNT, path)) for path, t in self.tracked.items() if retired or not t.retired}
        self._live_at, self._live_now = stamp, out
        return out

    def _after_live_write(self, path: str, before: dict[str, str | None]) -> None:
        new_key = self.service.key_of(self.kv.peek(MOUNT, path))
        now = self.clock.now()
        last = self.tracked[path].last_key if path in self.tracked else None
        if before.get(path) is None and last not in (None, new_key):
            # Written over by hand (no key) since the rotator wrote `last` here: this write is its successor (§6.3).
            self.superseded_at.setdefault(last, now)
        for where, key in before.items():
            if key is None or key == new_key:
                continue
            if where == path:
                self.superseded_at[key] = now  # live here again since (a restore, adopted): its grace starts over
            elif self.lines.carries_on(path, key, self.records()):
                # Held at another path (one no file names now, or another file's): this write of its own credential
                # supersedes it only if nothing had yet (a moved path's first write).
                self.superseded_at.setdefault(key, now)
        self.tracked[path] = Tracking(promoted=True, foreign=False, last_key=new_key)
        self.live_writes += 1

    def records(self) -> dict[str, StateRecord]:
        """Every readable state record, by credential name (parsed once per change of the store)."""
        if self._records_at == self.kv.generation:
            return self._records_now
        out = {}
        for name in self.kv._list(MOUNT, STATE_PREFIX):
            if name.startswith("_") or name.endswith("/"):
                continue
            path = f"{STATE_PREFIX}/{name}"
            text = self.kv.peek_text(MOUNT, path)
            if text is None:
                continue
            if text not in self._records:
                try:
                    self._records[text] = StateRecord.model_validate_json(text)
                except ValueError:
                    self._records[text] = None
            if self._records[text] is not None:
                out[name] = self._records[text]
        self._records_now, self._records_at = out, self.kv.generation
        return out

    def violate(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, detail, self.step_index))
