"""`rotator audit verify | seal | public-key` (contract §2; docs/AUDIT.md).

Results go to stdout, problems to stderr; exit 0 intact (or sealed), 1
broken (or refused), 2 a usage or settings error. The first line of a
failure names the first bad line (`FILE:LINE: reason`) or the anchor the
file misses (`anchor MOUNT/PATH: reason`). Nothing here prints a token.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from rotator.audit.anchor import AnchorStore, Stored, public_key_pem, signature_problem
from rotator.audit.chain import AuditChainError, Tip, read_chain_state, seq_span
from rotator.audit.seal import seal
from rotator.audit.verify import VerifyResult, declared_chain_id, parse_from, verify
from rotator.config.settings import Settings
from rotator.core.errors import ConfigError, RotatorError

if TYPE_CHECKING:
    from rotator.vault.store import VaultStore  # hvac loads only for the commands that reach Vault

EXIT_OK, EXIT_BROKEN, EXIT_USAGE = 0, 1, 2


def _from_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Tip | None:
    if value is None:
        return None
    try:
        return parse_from(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "start", metavar="SEQ:HASH", default=None, callback=_from_option,
              help="The files continue a rotated-out one: its last line's seq and hash (else the chain must start at genesis).")
@click.option("--anchor", "with_anchor", is_flag=True,
              help="Also check the files against the tip anchored in Vault (needs VAULT_ADDR and a token).")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="PEM ed25519 public key of the Transit key that signs anchors: check the anchor's signature offline.")
def verify_command(files: tuple[Path, ...], start: Tip | None, with_anchor: bool, public_key: Path | None) -> None:
    """Check the hash chain of an audit file, or of consecutive files
    (oldest first), from the chain's genesis (seq 1, prev_hash of 64
    zeros) or from --from. With --anchor, the files must hold the line
    anchored in Vault, with its hash; with ROTATOR_AUDIT_TRANSIT_KEY or
    --public-key the anchor's signature must be valid too. Exits 0 when
    intact, 1 at the first bad line or the anchor missed, which it names."""
    if public_key is not None and not with_anchor:
        raise click.UsageError("--public-key checks an anchor's signature: give --anchor too")
    anchor = _read_anchor(files, start, public_key) if with_anchor else None
    probe = anchor.stored.record.seq if isinstance(anchor, _Anchor) and anchor.stored.record else None
    result = verify(list(files), start=start, probe=probe)
    if not result.ok:  # the first bad line comes first, whatever the anchor
        where = f"{result.file}:{result.line}" if result.line is not None else f"{result.file}" if result.file else "audit"
        _fail(f"{where}: {result.reason}", result)
    if isinstance(anchor, _Unreadable):
        if anchor.to_stderr:
            click.echo(anchor.message, err=True)
            sys.exit(EXIT_BROKEN)
        _fail(anchor.message, result)
    lines = [_summary(result, files)]
    if anchor is not None:
        lines += anchor.check(result)
    for line in lines + [f"note: {note}" for note in result.notes]:
        click.echo(line)


def _summary(result: VerifyResult, files: tuple[Path, ...]) -> str:
    span = f", seq {result.first} to {result.last.seq}" if result.last is not None and result.first is not None else ""
    return f"intact: {result.events} event(s) in {len(files)} file(s){span}"


def _fail(message: str, result: VerifyResult | None = None) -> NoReturn:
    click.echo(message)
    for note in result.notes if result else ():
        click.echo(f"note: {note}")
    sys.exit(EXIT_BROKEN)


@dataclass
class _Anchor:
    """The anchor read for `verify --anchor`, and how to check the files against it."""

    anchors: AnchorStore
    chain_id: str
    stored: Stored
    public_key: bytes | None

    def check(self, result: VerifyResult) -> list[str]:
        where = f"anchor {self.anchors.where(self.chain_id)}"
        record = self.stored.record
        if record is None:
            _fail(f"{where}: no anchor in Vault for chain {self.chain_id}: the chain was never anchored there, "
                  "or the files were rewritten as a new chain", result)
        if record.chain_id != self.chain_id:
            _fail(f"{where}: the record names chain {record.chain_id}, not {self.chain_id}: it was written there by hand", result)
        signed = self.public_key is not None or self.anchors.transit is not None
        if record.kv_version != self.stored.version and not signed:
            _fail(f"{where}: the anchor was written for version {record.kv_version} of the record, but it is version "
                  f"{self.stored.version}: an older anchor was written back (rewound through KV)", result)
        if signed:
            problem = signature_problem(record, self.stored.version, store=self.anchors.store,
                                        transit=self.anchors.transit, public_key=self.public_key)
            if problem is not None:
                _fail(f"{where}: {problem}", result)
        last = result.last.seq if result.last is not None else 0
        said = f"seq {record.seq} (hash {record.hash[:12]}…, anchored at {record.anchored_at} by {record.host})"
        if result.first is not None and record.seq < result.first:
            _fail(f"{where}: the anchored {said} comes before the first line checked (seq {result.first}): "
                  "verify the file(s) holding it too, oldest first", result)
        if record.seq > last:
            _fail(f"{where}: the files end at seq {last}, but the chain's anchored tip is {said}: "
                  f"{seq_span(last + 1, record.seq)} missing (cut, or the newer files were not given)", result)
        lines = []
        if any(first <= record.seq <= last_cut for first, last_cut in result.gaps):
            lines.append(f"note: the anchored seq {record.seq} lies in a range the chain records as cut (audit.chain_broken)")
        elif result.probe is None or result.probe.hash != record.hash:
            at = f"{result.probe.file}:{result.probe.line}" if result.probe else where
            _fail(f"{at}: seq {record.seq} has another hash than the anchor in Vault holds ({record.hash[:12]}…): "
                  "the chain was rewritten", result)
        signature = ", signature valid" if signed else (", unsigned" if record.signature is None else ", signature not checked (no key given)")
        lines.append(f"anchored: {said} at {self.anchors.where(self.chain_id)} version {self.stored.version}{signature}")
        if last > record.seq:
            lines.append(f"note: {last - record.seq} line(s) after the anchored seq {record.seq} are not anchored yet "
                         "(appended since the last anchor: see docs/AUDIT.md on the window)")
        return lines


def _settings() -> Settings:
    from rotator.wiring import load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_USAGE)


def _vault(settings: Settings) -> VaultStore:
    """A logged-in store; its log events (a Vault login) go to stderr, as for `status`."""
    from rotator.vault.store import VaultStore
    from rotator.wiring import configure_logging

    configure_logging(settings, stream=sys.stderr, with_audit_file=False)
    store = VaultStore(settings.vault_connection())
    store.login()
    return store


def _anchor_store(settings: Settings) -> AnchorStore:
    store = _vault(settings)
    return AnchorStore(store, settings.audit_anchor_location(), transit=settings.audit_transit_location())


@dataclass(frozen=True)
class _Unreadable:
    """Why no anchor could be had: a verdict (stdout), or Vault's error (stderr)."""

    message: str
    to_stderr: bool = False


def _read_anchor(files: tuple[Path, ...], start: Tip | None, public_key: Path | None) -> _Anchor | _Unreadable:
    # The first line names the chain; only a file from before chain ids needs a walk to find it.
    chain_id = declared_chain_id(files[0]) or verify(list(files), start=start).chain_id
    if chain_id is None:
        return _Unreadable(f"{files[0]}: the files declare no chain_id, so no anchor can be found for them (written before anchors existed?)")
    settings = _settings()
    try:
        anchors = _anchor_store(settings)
        stored = anchors.read(chain_id)
    except RotatorError as exc:
        return _Unreadable(f"rotator: cannot read the audit anchor from Vault at {settings.vault_addr}: {exc}", to_stderr=True)
    return _Anchor(anchors, chain_id, stored, public_key.read_bytes() if public_key is not None else None)


@click.command("seal")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--previous", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The rotated file the chain continues from (decompressed), when FILE is empty or absent.")
def seal_command(file: Path, previous: Path | None) -> None:
    """Let appends resume after a torn write, cut lines or a lost sidecar,
    recording the break in the chain itself (docs/AUDIT.md section 5).

    A FILE ending in a torn line, every other line intact, is moved aside
    to FILE.broken-TIME as evidence and a new FILE starts with an
    audit.chain_broken event. A FILE whose newest lines were cut (behind
    its sidecar, or behind the anchor in Vault when a Vault token is set)
    gets one audit.chain_broken line naming the missing range. With
    --previous, FILE must be empty or absent and continues the chain from
    PREVIOUS. Exits 0 when sealed, 1 when refused (nothing is changed)."""
    settings = _settings()
    anchor_tip, anchors = _anchor_for_seal(settings, file) if previous is None else (None, None)
    try:
        aside = seal(file, previous=previous, anchor=anchor_tip)
        state = read_chain_state(file)
    except (AuditChainError, OSError) as exc:
        click.echo(f"rotator: not sealed: {exc}", err=True)
        sys.exit(EXIT_BROKEN)
    tip = f" (tip: seq {state.tip.seq})" if state is not None else ""
    if aside is not None:
        click.echo(f"sealed: the torn file is kept as {aside}; {file} continues the chain with an audit.chain_broken event{tip}")
    elif previous is not None:
        click.echo(f"sealed: {file} continues the chain from {previous}{tip}")
    else:
        click.echo(f"sealed: {file} records the missing lines in an audit.chain_broken event{tip}")
    if anchors is not None:
        _anchor_after_seal(anchors, file)


def _has_vault_login(settings: Settings) -> bool:
    return bool(settings.vault_token) or settings.vault_auth != "token"


def _anchor_for_seal(settings: Settings, file: Path) -> tuple[Tip | None, AnchorStore | None]:
    """The anchored tip of FILE's chain, when a Vault login is configured (else the sidecar alone counts)."""
    if not _has_vault_login(settings):
        return None, None
    try:
        state = read_chain_state(file)
    except AuditChainError:
        state = None
    chain_id = (state.chain_id if state else None) or (declared_chain_id(file) if file.exists() else None)
    if chain_id is None:
        return None, None
    try:
        anchors = _anchor_store(settings)
        record = anchors.read(chain_id).record
    except RotatorError as exc:
        click.echo(f"rotator: not sealed: cannot read the audit anchor from Vault at {settings.vault_addr}: {exc}; "
                   "unset VAULT_TOKEN to seal from the sidecar alone", err=True)
        sys.exit(EXIT_BROKEN)
    return (record.tip if record else None), anchors


def _anchor_after_seal(anchors: AnchorStore, file: Path) -> None:
    from rotator.audit.anchor import Anchorer
    from rotator.audit.writer import AuditFile

    anchorer = Anchorer(AuditFile(file), anchors, log=lambda: _Quiet())
    written = anchorer.anchor_once(quiet=True)
    if written is not None:
        click.echo(f"anchored: seq {written.seq} at {anchors.where(written.chain_id)}")
    else:
        click.echo("rotator: warning: the seal is not anchored yet; the next writer anchors it", err=True)


class _Quiet:
    """A logger for the seal command: problems go to stderr, nothing to stdout."""

    def info(self, *_args: object, **_kwargs: object) -> None:
        return None

    def warning(self, event: str, **fields: object) -> None:
        click.echo(f"rotator: {event}: {fields.get('error', '')}", err=True)

    error = warning


@click.command("public-key")
@click.option("--version", "key_version", type=click.IntRange(min=1), default=None, help="Key version (default: the latest).")
def public_key_command(key_version: int | None) -> None:
    """Print the PEM public key of the Transit key that signs anchors
    (ROTATOR_AUDIT_TRANSIT_KEY), for `audit verify --anchor --public-key`."""
    settings = _settings()
    transit = settings.audit_transit_location()
    if transit is None:
        click.echo("rotator: ROTATOR_AUDIT_TRANSIT_KEY is not set", err=True)
        sys.exit(EXIT_USAGE)
    try:
        keys = _vault(settings).transit_public_keys(*transit)
    except RotatorError as exc:
        click.echo(f"rotator: cannot read transit key {'/'.join(transit)}: {exc}", err=True)
        sys.exit(EXIT_BROKEN)
    version = key_version or max(keys, default=0)
    if version not in keys:
        click.echo(f"rotator: transit key {'/'.join(transit)} has no public key version {version} (is it ed25519?)", err=True)
        sys.exit(EXIT_BROKEN)
    click.echo(public_key_pem(keys[version]), nl=False)
