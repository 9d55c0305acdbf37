"""Typed, read-only views of Storage blob events in the Event Grid and CloudEvents 1.0 schemas.

An envelope reader (``shared.store.envelopes`` decodes with the SDK's own models; an Event Grid
event of the documented shape is read directly by ``grid_envelope``, the hot path of a batched
delivery) yields type, subject, data and time; this module adds the blob-specific view:
container and blob name decoded once from ``subject``, the ``data`` fields typed, the raw
event kept for logs.

Classification follows the webhook contract (SPEC §3): a body that is not an event or an
array of events raises ``EventPayloadError`` (answered 400, so Event Grid dead-letters it);
an event that is well-formed JSON but unusable (unknown type, bad subject, no sequencer, not
from the outputs account, not of the shape Azure sends: ``shared.domain.sources``) is
*skipped* with a reason, never an error, so one odd event cannot hold back a batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any
from urllib.parse import unquote, urlsplit

from .sources import (
    MAX_BLOB_BYTES,
    MAX_BLOB_NAME_CHARS,
    MAX_CONTAINER_CHARS,
    MAX_FIELD_CHARS,
    foreign_source,
    is_azure_sequencer,
    oversized_field,
    shown,
    unencodable_field,
)

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"
#: Data Lake Storage Gen2 (hierarchical namespace): one event for a rename or a whole directory.
BLOB_RENAMED = "Microsoft.Storage.BlobRenamed"
DIRECTORY_RENAMED = "Microsoft.Storage.DirectoryRenamed"
DIRECTORY_DELETED = "Microsoft.Storage.DirectoryDeleted"
SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"

#: Event Grid delivers at most 1 MB per request by default (64 MB max event size is for
#: custom topics); anything far larger than a batch can be is refused outright.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
#: Event Grid delivers at most 5,000 events a batch (``maxEventsPerBatch``): more is no delivery.
MAX_EVENTS_PER_REQUEST = 5_000
#: The times Table storage holds in an ``Edm.DateTime`` (and the SDK writes with four-digit
#: years): an event time outside them could be stored on Azurite but never read back.
MIN_EVENT_TIME = datetime(1601, 1, 1, tzinfo=timezone.utc)
MAX_EVENT_TIME = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)

#: Microsoft's own CloudEvents samples (cloud-event-schema.md, the SDK's) give the subject
#: without its leading ``/``: both forms name the blob.
_SUBJECT = re.compile(r"^/?blobServices/default/containers/([^/]+)/blobs/(.+)$", re.DOTALL)


class EventPayloadError(ValueError):
    """The request body is not an event or an array of events."""


class PayloadTooLargeError(EventPayloadError):
    """The request body is larger than any delivery, in bytes or in events (answered 413: like
    400, Event Grid dead-letters it without retrying, and it tells a sender that splitting the
    body helps, where 400 would say the events themselves are malformed)."""


class BlobAction(str, Enum):
    CREATED = "created"
    DELETED = "deleted"


class NamespaceAction(str, Enum):
    BLOB_RENAMED = "blob-renamed"
    DIRECTORY_RENAMED = "directory-renamed"
    DIRECTORY_DELETED = "directory-deleted"


_NAMESPACE_ACTIONS = {
    BLOB_RENAMED: NamespaceAction.BLOB_RENAMED,
    DIRECTORY_RENAMED: NamespaceAction.DIRECTORY_RENAMED,
    DIRECTORY_DELETED: NamespaceAction.DIRECTORY_DELETED,
}


class SkipReason(str, Enum):
    UNSUPPORTED_TYPE = "unsupported-event-type"
    MALFORMED = "malformed-event"
    NOT_A_JOB_CONTAINER = "not-a-job-container"
    NOT_A_CONVENTION_PATH = "not-a-convention-path"
    UNINDEXABLE = "unindexable"
    FOREIGN_ACCOUNT = "foreign-account"


@dataclass(frozen=True, slots=True)
class BlobEvent:
    """One BlobCreated or BlobDeleted event, whichever schema it came in."""

    action: BlobAction
    container: str
    blob_name: str
    sequencer: str
    event_id: str
    event_time: datetime
    url: str | None = None
    size: int | None = None
    content_type: str | None = None
    etag: str | None = None
    blob_type: str | None = None
    api: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: A repair from what storage holds (reindex, reconcile, a directory event): the stored
    #: row's sequencer it replaces whatever the order (see ``planning.is_stale``). Never from a
    #: delivered event.
    supersedes: str | None = None


@dataclass(frozen=True, slots=True)
class NamespaceEvent:
    """A Data Lake Gen2 rename or directory delete: one event for a blob or a whole folder.

    ``name`` is the path the event's subject names (the new path of a rename, the deleted
    directory); ``source`` the old path of a rename, decoded from ``data.sourceUrl``.
    """

    action: NamespaceAction
    container: str
    name: str
    sequencer: str
    event_id: str
    event_time: datetime
    source: str | None = None
    recursive: bool = True


@dataclass(frozen=True, slots=True)
class SkippedEvent:
    reason: SkipReason
    event_id: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class EventBatch:
    """A decoded delivery: the blob events to index, what was skipped, and a handshake's code
    (a validation event may come with blob events: both are answered)."""

    blob_events: tuple[BlobEvent, ...] = ()
    skipped: tuple[SkippedEvent, ...] = ()
    namespace_events: tuple[NamespaceEvent, ...] = ()
    validation_code: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the blob view needs of any event envelope, whichever schema it came in."""

    event_type: Any
    subject: Any
    data: Any
    time: Any


#: Decodes one event dict's envelope; raises (anything) when it is not a valid envelope.
EnvelopeReader = Callable[[Mapping[str, Any]], Envelope]


#: Nesting an event needs: the array, the event, ``data``, ``data.storageDiagnostics``.
MAX_NESTING = 16
#: What a delivery of ``MAX_EVENTS_PER_REQUEST`` events can hold, counted on the raw bytes
#: before anything is parsed (inside strings too, so generous): objects and arrays (an event
#: has 3), ``,`` separators (an event has about 17) and ``"`` (about 70). A body beyond them is
#: refused in one pass over its bytes, never parsed into millions of objects.
MAX_CONTAINERS = MAX_EVENTS_PER_REQUEST * 16
MAX_SEPARATORS = MAX_EVENTS_PER_REQUEST * 128
MAX_QUOTES = MAX_EVENTS_PER_REQUEST * 256


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _nesting(value: Any) -> int:
    """How deep ``value`` nests (1 for a scalar); walks containers only, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_NESTING:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def decode_body(body: bytes) -> Any:
    """Parse a webhook body as JSON, refusing anything that cannot be a delivery.

    The work is bounded before any object is built: the body's size, then what its bytes can
    hold (``MAX_CONTAINERS``, ``MAX_SEPARATORS``, ``MAX_QUOTES``: a ``[{},{},...]`` of 16 MiB
    is refused here, not parsed into 5.6 million dicts), then its nesting and event count.
    Beyond Event Grid's 5,000 events is ``PayloadTooLargeError`` (413); a body that is no
    event or array of events, ``EventPayloadError`` (400).
    """
    if len(body) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(f"payload of {len(body)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    for what, found, limit in (
        ("objects and arrays", body.count(b"{") + body.count(b"["), MAX_CONTAINERS),
        ("separators", body.count(b","), MAX_SEPARATORS),
        ("quotes", body.count(b'"'), MAX_QUOTES),
    ):
        if found > limit:
            raise PayloadTooLargeError(
                f"the body holds up to {found} {what}; a delivery of at most {MAX_EVENTS_PER_REQUEST} events holds {limit}")
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventPayloadError(f"body is not JSON: {exc}") from exc
    except ValueError as exc:  # NaN, Infinity: Python's extensions, not JSON (RFC 8259)
        raise EventPayloadError(f"body is not JSON: {exc}") from exc
    except RecursionError as exc:  # e.g. '[' * 5000: no delivery nests that deep
        raise EventPayloadError("body nests too deeply to be a delivery") from exc
    if _nesting(payload) > MAX_NESTING:
        raise EventPayloadError(f"body nests deeper than {MAX_NESTING} levels: no event does")
    if isinstance(payload, list) and len(payload) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLargeError(f"{len(payload)} events exceed Event Grid's {MAX_EVENTS_PER_REQUEST} per delivery")
    return payload


def _validation_code(item: Mapping[str, Any]) -> str:
    data = item.get("data")
    code = data.get("validationCode") if isinstance(data, dict) else None
    if not isinstance(code, str) or not code or len(code) > MAX_FIELD_CHARS["id"]:
        raise EventPayloadError("validation event without data.validationCode")
    return code


def parse_events(payload: Any, read_envelope: EnvelopeReader, account: str | None = None) -> EventBatch:
    """Decode one event or an array of events (either schema) into an ``EventBatch``.

    With ``account``, events not from that storage account are skipped (``foreign-account``).
    A subscription validation event is answered *and* any blob events beside it are indexed.
    """
    items: Sequence[Any] = payload if isinstance(payload, list) else [payload]
    if not items:
        raise EventPayloadError("an empty array holds no events")
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLargeError(f"{len(items)} events exceed Event Grid's {MAX_EVENTS_PER_REQUEST} per delivery")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not (
            isinstance(item.get("eventType"), str) or isinstance(item.get("specversion"), str)
        ):
            raise EventPayloadError(
                f"item {index} is not an Event Grid or CloudEvents event "
                "(no string 'eventType' or 'specversion')"
            )

    blob_events: list[BlobEvent] = []
    skipped: list[SkippedEvent] = []
    namespace_events: list[NamespaceEvent] = []
    validation_code: str | None = None
    for item in items:
        if item.get("eventType") == SUBSCRIPTION_VALIDATION:
            code = _validation_code(item)
            validation_code = validation_code or code
            continue
        outcome = parse_event(item, read_envelope, account)
        if isinstance(outcome, BlobEvent):
            blob_events.append(outcome)
        elif isinstance(outcome, NamespaceEvent):
            namespace_events.append(outcome)
        else:
            skipped.append(outcome)
    return EventBatch(tuple(blob_events), tuple(skipped), tuple(namespace_events), validation_code)


def grid_envelope(item: Mapping[str, Any]) -> Envelope | None:
    """The Event Grid envelope read directly when it has the documented shape.

    A webhook delivery holds hundreds of events and the SDK's model deserializer costs more
    than indexing them; anything unusual (other key casing, odd types) goes to the SDK instead.
    """
    event_type, subject, data, at = item.get("eventType"), item.get("subject"), item.get("data"), item.get("eventTime")
    if not (isinstance(event_type, str) and isinstance(subject, str) and isinstance(data, dict) and isinstance(at, str)):
        return None
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return Envelope(event_type, subject, data, when)


def parse_event(
    item: Mapping[str, Any], read_envelope: EnvelopeReader, account: str | None = None
) -> BlobEvent | NamespaceEvent | SkippedEvent:
    """Decode one event dict into a ``BlobEvent``, or say why it is skipped.

    With ``account`` (the outputs account's name), an event whose topic/source or URL names
    another account is skipped as ``foreign-account``.
    """
    raw_id = item.get("id")
    event_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= MAX_FIELD_CHARS["id"] else None
    try:
        envelope = read_envelope(item)
    except Exception as exc:
        return SkippedEvent(SkipReason.MALFORMED, event_id, f"bad envelope: {type(exc).__name__}: {shown(str(exc))}")
    if account is not None:
        foreign = foreign_source(item, envelope.data, account)
        if foreign is not None:
            return SkippedEvent(SkipReason.FOREIGN_ACCOUNT, event_id, foreign)
    too_long = oversized_field(item, envelope.data)
    if too_long is not None:
        return SkippedEvent(SkipReason.MALFORMED, event_id, too_long)
    unencodable = unencodable_field(envelope.subject, envelope.data)
    if unencodable is not None:
        return SkippedEvent(SkipReason.MALFORMED, event_id, unencodable)
    return blob_event(item, event_id, envelope)


def event_time(when: Any) -> datetime | str:
    """The event's time in UTC (now when it has none), or why Table storage cannot hold it.

    Azure stamps events with the current UTC time; a time before 1601 or after 9999 (or one
    whose offset carries it past either end) is not from Azure, and a year below 1000 would be
    written with fewer than four digits, which the SDK cannot read back.
    """
    if not isinstance(when, datetime):
        return datetime.now(timezone.utc)
    try:
        utc = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        return f"eventTime {shown(str(when))} is outside the times Table storage holds"
    if not MIN_EVENT_TIME <= utc <= MAX_EVENT_TIME:
        return f"eventTime {shown(str(when))} is outside the times Table storage holds (1601-9999)"
    return utc


def _subject(subject: Any) -> tuple[str, str] | str:
    """Container and path of a ``subject``, or why it names none Azure could send."""
    match = _SUBJECT.match(subject) if isinstance(subject, str) else None
    if match is None:
        return f"subject {shown(subject)} names no blob"
    container, name = match.group(1), match.group(2)
    if len(container) > MAX_CONTAINER_CHARS or len(name) > MAX_BLOB_NAME_CHARS:
        return f"subject names a container or blob longer than Azure allows ({len(container)}, {len(name)} characters)"
    return container, name


def _sequencer(data: Any) -> str | None:
    sequencer = data.get("sequencer") if isinstance(data, dict) else None
    return sequencer if is_azure_sequencer(sequencer) else None


def _url_path(url: Any, container: str) -> str | None:
    """The blob or directory path a ``blob``/``dfs`` URL names in ``container`` (percent-decoded)."""
    if not isinstance(url, str):
        return None
    path = unquote(urlsplit(url).path)
    parts = path.lstrip("/").split("/", 1)
    # Azurite and other emulators put the account name first: /{account}/{container}/{path}.
    if len(parts) == 2 and parts[0] != container and "/" in parts[1] and parts[1].split("/", 1)[0] == container:
        parts = parts[1].split("/", 1)
    if len(parts) != 2 or parts[0] != container or not parts[1]:
        return None
    return parts[1].rstrip("/")


def namespace_event(event_id: str | None, action: NamespaceAction, subject: Any, data: Any, when: Any) -> NamespaceEvent | SkippedEvent:
    """The view of a Data Lake Gen2 rename or directory delete, or why it is skipped."""
    named = _subject(subject)
    if isinstance(named, str):
        return SkippedEvent(SkipReason.MALFORMED, event_id, named)
    sequencer = _sequencer(data)
    if sequencer is None:
        return SkippedEvent(SkipReason.MALFORMED, event_id, "data.sequencer is missing or not of Azure's shape")
    container, name = named[0], named[1].rstrip("/")
    source = None
    if action is not NamespaceAction.DIRECTORY_DELETED:
        source = _url_path(data.get("sourceUrl"), container)
        if source is None:
            return SkippedEvent(SkipReason.MALFORMED, event_id, "data.sourceUrl names no path in the container")
    recursive = str(data.get("recursive", "true")).lower() == "true"
    at = event_time(when)
    if isinstance(at, str):
        return SkippedEvent(SkipReason.MALFORMED, event_id, at)
    return NamespaceEvent(action, container, name, sequencer, event_id or "", at, source, recursive)


def blob_event(item: Mapping[str, Any], event_id: str | None, envelope: Envelope) -> BlobEvent | NamespaceEvent | SkippedEvent:
    """The blob view of one decoded envelope, or why it is skipped."""
    event_type, subject, data, when = envelope.event_type, envelope.subject, envelope.data, envelope.time

    if isinstance(event_type, str) and event_type in _NAMESPACE_ACTIONS:
        return namespace_event(event_id, _NAMESPACE_ACTIONS[event_type], subject, data, when)
    if event_type == BLOB_CREATED:
        action = BlobAction.CREATED
    elif event_type == BLOB_DELETED:
        action = BlobAction.DELETED
    else:
        return SkippedEvent(SkipReason.UNSUPPORTED_TYPE, event_id, f"event type {shown(event_type)}")

    named = _subject(subject)
    if isinstance(named, str):
        return SkippedEvent(SkipReason.MALFORMED, event_id, named)
    if not isinstance(data, dict):
        return SkippedEvent(SkipReason.MALFORMED, event_id, "data is not an object")
    sequencer = _sequencer(data)
    if sequencer is None:
        return SkippedEvent(SkipReason.MALFORMED, event_id, "data.sequencer is missing or not of Azure's shape")
    size = data.get("contentLength")
    # No blob is larger than Azure's largest (so no sum of sizes overflows the Int64 counters).
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_BLOB_BYTES):
        return SkippedEvent(SkipReason.MALFORMED, event_id, f"data.contentLength {shown(size)}")
    at = event_time(when)
    if isinstance(at, str):
        return SkippedEvent(SkipReason.MALFORMED, event_id, at)

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return BlobEvent(
        action=action,
        container=named[0],
        blob_name=named[1],
        sequencer=sequencer,
        event_id=event_id or "",
        event_time=at,
        url=text("url"),
        size=size,
        content_type=text("contentType"),
        etag=text("eTag"),
        blob_type=text("blobType"),
        api=text("api"),
        raw=item,
    )
