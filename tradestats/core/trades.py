"""Trade records: decoding, validation, and the reason a record is rejected.

The input is what the original Java demo writes: a JSON object value and the ticker as raw
UTF-8 key bytes. Valid records are decoded by msgspec straight into a typed struct, which is
both the validator and the fastest decoder available. Only a rejected record takes the slow
path that works out *why* it was rejected, so diagnosis costs nothing on good input.
"""

from __future__ import annotations

import json
import re
import sys
from enum import StrEnum
from typing import Annotated, Literal

import msgspec

__all__ = [
    "MAX_SIZE",
    "TICKER_PATTERN",
    "Reason",
    "Rejected",
    "Trade",
    "checked_trade",
    "decode_trade",
    "decode_value",
    "encode_trade",
]

TICKER_PATTERN = r"\A[A-Za-z0-9._-]{1,32}\Z"
#: Sizes are Java ints in the original app; larger ones could not come from it.
MAX_SIZE = 2**31 - 1


class Trade(msgspec.Struct, gc=False):
    """One valid trade. Unknown extra fields are ignored, as Gson does in the original app.

    The ticker must match :data:`TICKER_PATTERN`; :func:`decode_trade` checks that itself
    (see there) instead of leaving it to msgspec.
    """

    type: Literal["ASK", "BID"]
    ticker: str
    price: Annotated[float, msgspec.Meta(gt=0.0, le=sys.float_info.max)]
    size: Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE)]


class Reason(StrEnum):
    """Why a record went to the dead-letter topic. A closed set: it labels a metric."""

    TOMBSTONE = "tombstone"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_TICKER = "bad_ticker"
    BAD_PRICE = "bad_price"
    BAD_SIZE = "bad_size"
    KEY_MISSING = "key_missing"
    KEY_MISMATCH = "key_mismatch"
    BAD_TIMESTAMP = "bad_timestamp"
    LATE = "late"


class Rejected(Exception):
    """A record that is not a valid trade, with a reason code and a human-readable detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_decoder = msgspec.json.Decoder(Trade)
_ticker_pattern = re.compile(TICKER_PATTERN)
#: Tickers already found to match the pattern, with the key their records must have. msgspec
#: would run the regular expression on every record, which cost twice the rest of the decode;
#: a market has a bounded set of tickers, so each is matched once (up to this many; beyond,
#: every time).
_checked_keys: dict[str, bytes] = {}
_CHECKED_TICKERS_MAX = 1 << 18
#: The hot path of :func:`decode_trade`, for callers that decode many records: a trade this
#: returns has every field checked but the ticker's pattern and the record's key. A caller
#: that already accepted the ticker with this key may take it as valid, else
#: :func:`checked_trade` gives the verdict; a record it raises on takes :func:`decode_trade`
#: for the reason. It saves a Python call per trade.
decode_value = _decoder.decode
_encoder = msgspec.json.Encoder()
_FIELD_REASONS = {
    "type": Reason.BAD_TYPE,
    "ticker": Reason.BAD_TICKER,
    "price": Reason.BAD_PRICE,
    "size": Reason.BAD_SIZE,
}
_ERROR_PATH = re.compile(r" - at `\$\.(\w+)`")


def decode_trade(key: bytes | None, value: bytes | None) -> Trade:
    """Decode and validate one record, or raise :class:`Rejected` saying why it is invalid."""
    if value is None:
        raise Rejected(Reason.TOMBSTONE, "record value is null")
    try:
        trade = _decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _diagnose_undecodable(value, exc) from None
    except msgspec.ValidationError as exc:
        raise _classify_validation_error(exc) from None
    return checked_trade(key, trade)


def checked_trade(key: bytes | None, trade: Trade) -> Trade:
    """``trade`` (as msgspec decoded it) once its ticker and record key are checked, or raise
    :class:`Rejected`: the second half of :func:`decode_trade`, for callers that decoded the
    value themselves."""
    ticker = trade.ticker
    expected = _checked_keys.get(ticker)
    if expected is None:
        if _ticker_pattern.search(ticker) is None:
            raise Rejected(
                Reason.BAD_TICKER, f"ticker {ticker!r} does not match {TICKER_PATTERN!r}"
            )
        expected = ticker.encode()
        if len(_checked_keys) < _CHECKED_TICKERS_MAX:
            _checked_keys[ticker] = expected
    if key is None:
        raise Rejected(Reason.KEY_MISSING, "record key is null; expected the ticker")
    if key != expected:
        raise Rejected(Reason.KEY_MISMATCH, f"record key {key!r} differs from ticker {ticker!r}")
    return trade


def encode_trade(trade: Trade) -> bytes:
    """The JSON value the original generator writes for a trade."""
    return _encoder.encode(trade)


def _diagnose_undecodable(value: bytes, exc: Exception) -> Rejected:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as utf_exc:
        return Rejected(Reason.NOT_UTF8, f"value is not UTF-8: {utf_exc}")
    try:
        # The standard library accepts NaN and Infinity, which JSON does not. If it can parse
        # the value, the field check below names the field that holds the non-finite number.
        parsed = json.loads(text)
    except ValueError:
        return Rejected(Reason.NOT_JSON, f"value is not JSON: {exc}")
    try:
        msgspec.convert(parsed, Trade)
    except msgspec.ValidationError as validation_exc:
        return _classify_validation_error(validation_exc)
    return Rejected(Reason.NOT_JSON, f"value is not JSON: {exc}")


def _classify_validation_error(exc: msgspec.ValidationError) -> Rejected:
    message = str(exc)
    if message.startswith("Object missing required field"):
        return Rejected(Reason.MISSING_FIELD, message)
    match = _ERROR_PATH.search(message)
    if match is None:
        return Rejected(Reason.NOT_OBJECT, message)
    return Rejected(_FIELD_REASONS[match.group(1)], message)
