"""What Table storage hands back, made readable: stored times the SDK's parser refuses and texts
no answer can encode (values written before events were checked for them) are read anyway, logged,
so one bad value never fails a whole query page (a listing, a reindex, the reconciler)."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Any

from azure.data.tables import EdmType

log = logging.getLogger(__name__)

__all__ = ["LENIENT_DATETIMES", "lenient_datetime", "readable"]

#: An Edm.DateTime as a service may hold it: a year of 1 to 4 digits (Azurite keeps what it was
#: sent, and ``strftime`` writes year 1 as ``1``), up to 7 fraction digits, ``Z``.
_SERVICE_TIME = re.compile(r"(\d{1,4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,7}))?Z?")


def lenient_datetime(value: Any) -> datetime | None:
    """A stored ``Edm.DateTime`` the SDK's parser refuses (e.g. ``1-01-01T00:00:00.000000Z``),
    read anyway; None (logged) when it is no time at all."""
    match = _SERVICE_TIME.fullmatch(value) if isinstance(value, str) else None
    if match is not None:
        year, month, day, hour, minute, second, fraction = match.groups()
        try:
            return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                            int((fraction or "0")[:6].ljust(6, "0")), tzinfo=timezone.utc)
        except ValueError:
            pass
    log.warning("an index row holds an unreadable time %r: read as absent", str(value)[:80])
    return None


def _install_lenient_datetimes() -> bool:
    """Make the SDK read every stored time: one unreadable value would otherwise fail the whole
    query page it is on (a listing, a reindex, the reconciler). The SDK keeps its converters in
    a private table (pinned azure-data-tables==12.7.0); if that changed, reads stay as they are,
    decided once at import and logged."""
    try:
        from azure.data.tables import _deserialize

        conversions = _deserialize._ENTITY_TO_PYTHON_CONVERSIONS
        strict = conversions[EdmType.DATETIME]
        if not callable(strict):
            raise TypeError("the SDK's datetime converter is not callable")
    except Exception as exc:  # any change of the private SDK attribute: keep the SDK's reads
        log.warning("azure-data-tables' datetime reader not wrapped (%s: %s): a stored time it cannot parse fails "
                    "its query", type(exc).__name__, exc)
        return False
    if getattr(strict, "lenient", False):
        return True

    def lenient(value: Any) -> Any:
        try:
            return strict(value)
        except (ValueError, TypeError, OverflowError):
            return lenient_datetime(value)

    lenient.lenient = True  # type: ignore[attr-defined]
    conversions[EdmType.DATETIME] = lenient
    return True


LENIENT_DATETIMES = _install_lenient_datetimes()



#: A lone surrogate: JSON can carry one (``"\ud800"``) and Azurite stores it, but no answer can
#: encode it in UTF-8 (a listing holding one answered 500).
_SURROGATE = re.compile("[\ud800-\udfff]")


def readable(name: str, value: Any) -> Any:
    """A stored text as an answer can carry it: a lone surrogate (written before events were
    checked for them) is read as U+FFFD, logged."""
    if type(value) is str and not value.isascii() and _SURROGATE.search(value) is not None:
        log.warning("an index row's %s holds a lone surrogate: read as U+FFFD", name)
        return _SURROGATE.sub("\ufffd", value)
    return value
