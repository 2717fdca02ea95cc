"""Audit events and logs: structlog, JSON lines on stdout (contract §7).

Every event is one line with `timestamp` (RFC 3339 UTC, `Z`), `level` and
`event`. A redaction processor runs last before rendering, as a safety net
under the rule that no secret value is ever passed to a log call. It
visits every string of the event (the event name, nested values, dict keys,
and bytes after decoding them as UTF-8):
- values under keys that name secrets (`secret`, `token`, `password`, ...)
  are masked;
- every secret the process has seen, in any encoded or cut-off form, is
  masked wherever it appears (`rotator.core.redaction`);
- a string that still looks like a secret (a private key, a Stripe or
  GitHub token, a JWT) is masked whole.
With an audit file configured, each event is also appended to it with its
hash chain before being printed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from rotator.core.redaction import REDACTED, SECRETS, register_secret
from rotator.core.validators import secret_lookalike

__all__ = ["REDACTED", "SECRETS", "configure", "get_logger", "redact", "redact_text", "register_secret"]

_SECRET_KEY_PARTS = ("secret", "token", "password", "passwd", "private_key", "api_key", "credential_data", "handle", "ciphertext")
# Keys whose name contains a secret-ish word but whose value is never secret.
_PUBLIC_KEYS = {"key_id", "credential", "token_type", "rotator-key-id"}
# Fields every event has, whose values the processor itself made.
_OWN_FIELDS = frozenset({"timestamp", "level"})


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered not in _PUBLIC_KEYS and any(part in lowered for part in _SECRET_KEY_PARTS)


def redact_text(text: str) -> str:
    """A string fit for output: registered secrets masked, and the whole
    string masked if what is left still looks like a secret."""
    scrubbed = SECRETS.scrub(text)
    return REDACTED if secret_lookalike(scrubbed) else scrubbed


def _redact_key(key: Any) -> Any:
    return redact_text(key) if isinstance(key, str) else key


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return redact_text(bytes(value).decode("utf-8", errors="replace"))
    if isinstance(value, dict):
        return {_redact_key(k): (REDACTED if _is_secret_key(str(k)) else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return _redact_value(f"{type(value).__name__}: {value}")
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return _redact_value(str(value))  # whatever it is, it is printed as its str()


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the safety net described above. Every string is
    scrubbed, the event name and the keys included."""
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key in _OWN_FIELDS:
            out[key] = value
        elif key == "event":
            out[key] = _redact_value(value)
        else:
            out[_redact_key(key)] = REDACTED if _is_secret_key(str(key)) else _redact_value(value)
    return out


def _timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    now = datetime.now(UTC)
    event_dict["timestamp"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return event_dict


def _drop_logger_name(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict.pop("logger", None)
    return event_dict


def _exception_to_error(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # A traceback could quote local values: log the type and message only.
    exc = event_dict.pop("exc_info", None)
    if exc:
        if exc is True:
            exc = sys.exc_info()[1]
        elif isinstance(exc, tuple):
            exc = exc[1]
        if isinstance(exc, BaseException):
            event_dict.setdefault("error", f"{type(exc).__name__}: {exc}")
    return event_dict


AuditSink = Callable[[dict[str, Any]], dict[str, Any]]


def _order_fields(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """timestamp, level, event first: easier on the eyes, same JSON."""
    head = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    return {**head, **event_dict}


def _drop_chain_fields(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in ("prev_hash", "hash"):
        event_dict.pop(key, None)
    return event_dict


def _sink_processor(sink: AuditSink) -> Callable[..., MutableMapping[str, Any]]:
    def process(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return sink(dict(event_dict))

    return process


AlertSink = Callable[[dict[str, Any]], None]


def _alert_processor(sink: AlertSink) -> Callable[..., MutableMapping[str, Any]]:
    # After redaction (and the audit file): alerts see what the log line holds.
    def process(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        sink(dict(event_dict))
        return event_dict

    return process


def configure(
    *, fmt: str = "json", stream: TextIO | None = None, audit_sink: AuditSink | None = None,
    alert_sink: AlertSink | None = None, level: int = logging.INFO,
) -> None:
    """Set up structlog for the whole process. Call once, early."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
        _drop_logger_name,
        _exception_to_error,
        redact,
        _order_fields,
    ]
    if audit_sink is not None:
        processors.append(_sink_processor(audit_sink))
    if alert_sink is not None:
        processors.append(_alert_processor(alert_sink))
    if fmt == "console":
        # People read the console: the chain's hashes stay in the audit file.
        processors.append(_drop_chain_fields)
        processors.append(structlog.dev.ConsoleRenderer(colors=(stream or sys.stdout).isatty(), sort_keys=False))
    else:
        processors.append(structlog.processors.JSONRenderer(ensure_ascii=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("rotator").bind(**context)
