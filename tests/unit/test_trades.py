"""Trade validation: what is accepted, and the reason given for everything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.oracle import parse_trade
from tradestats.core import trades
from tradestats.core.trades import Reason, Rejected, Trade, decode_trade, encode_trade

GOOD = b'{"type": "ASK", "ticker": "MMM", "price": 5000.37, "size": 42}'


def test_the_original_demo_record_is_valid() -> None:
    assert decode_trade(b"MMM", GOOD) == Trade("ASK", "MMM", 5000.37, 42)


@pytest.mark.parametrize(
    "value",
    [
        b'{"type":"BID","ticker":"BRK.B","price":1,"size":0}',  # integer price, size 0
        b'{"type":"ASK","ticker":"a_b-C.9","price":5e-324,"size":2147483647}',
        b'{"size":1,"price":2.5,"ticker":"X","type":"ASK","venue":"XNYS","tags":[1,{}]}',
        b' {"type":"ASK","ticker":"X","price":2.5,"size":1}\n',
    ],
)
def test_valid_variants(value: bytes) -> None:
    trade = decode_trade(parse_trade_key(value), value)
    assert trade.price > 0


def parse_trade_key(value: bytes) -> bytes:
    parsed = (
        parse_trade(b"X", value) or parse_trade(b"BRK.B", value) or parse_trade(b"a_b-C.9", value)
    )
    assert parsed is not None
    return parsed[0].encode()


CASES = [
    (b"MMM", None, Reason.TOMBSTONE),
    (b"MMM", b"\xff\xfe{}", Reason.NOT_UTF8),
    (b"MMM", b'{"type":"ASK","ticker":"M\xffM","price":1,"size":1}', Reason.NOT_UTF8),
    (b"MMM", b"not json", Reason.NOT_JSON),
    (b"MMM", b"", Reason.NOT_JSON),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":5', Reason.NOT_JSON),
    (b"MMM", GOOD + b" trailing", Reason.NOT_JSON),
    (b"MMM", b"[1, 2]", Reason.NOT_OBJECT),
    (b"MMM", b'"MMM"', Reason.NOT_OBJECT),
    (b"MMM", b"null", Reason.NOT_OBJECT),
    (b"MMM", b"42", Reason.NOT_OBJECT),
    (b"MMM", b'{"ticker":"MMM","price":1,"size":1}', Reason.MISSING_FIELD),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","size":1}', Reason.MISSING_FIELD),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":1}', Reason.MISSING_FIELD),
    (b"MMM", b'{"type":"SELL","ticker":"MMM","price":1,"size":1}', Reason.BAD_TYPE),
    (b"MMM", b'{"type":"ask","ticker":"MMM","price":1,"size":1}', Reason.BAD_TYPE),
    (b"MMM", b'{"type":1,"ticker":"MMM","price":1,"size":1}', Reason.BAD_TYPE),
    (b"M M", b'{"type":"ASK","ticker":"M M","price":1,"size":1}', Reason.BAD_TICKER),
    (b"", b'{"type":"ASK","ticker":"","price":1,"size":1}', Reason.BAD_TICKER),
    (b"X", b'{"type":"ASK","ticker":"' + b"X" * 33 + b'","price":1,"size":1}', Reason.BAD_TICKER),
    (b"MMM\n", b'{"type":"ASK","ticker":"MMM\\n","price":1,"size":1}', Reason.BAD_TICKER),
    (b"MMM", b'{"type":"ASK","ticker":42,"price":1,"size":1}', Reason.BAD_TICKER),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":NaN,"size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":Infinity,"size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":-Infinity,"size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":1e400,"size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":0,"size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":-0.0,"size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":-5,"size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":"5","size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":null,"size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":true,"size":1}', Reason.BAD_PRICE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":1,"size":NaN}', Reason.BAD_SIZE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":1,"size":-1}', Reason.BAD_SIZE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":1,"size":1.5}', Reason.BAD_SIZE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":1,"size":2.0}', Reason.BAD_SIZE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":1,"size":true}', Reason.BAD_SIZE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":1,"size":"1"}', Reason.BAD_SIZE),
    (b"MMM", b'{"type":"ASK","ticker":"MMM","price":1,"size":2147483648}', Reason.BAD_SIZE),
    (None, GOOD, Reason.KEY_MISSING),
    (b"ABT", GOOD, Reason.KEY_MISMATCH),
    (b'"MMM"', GOOD, Reason.KEY_MISMATCH),
]


@pytest.mark.parametrize(("key", "value", "reason"), CASES)
def test_invalid_records_are_rejected_with_their_reason(
    key: bytes | None, value: bytes | None, reason: Reason
) -> None:
    with pytest.raises(Rejected) as caught:
        decode_trade(key, value)
    assert caught.value.reason is reason
    assert caught.value.detail
    assert parse_trade(key, value) is None  # the oracle agrees it is invalid


def test_tickers_are_checked_on_every_record_whatever_was_seen_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Valid tickers are remembered (the pattern is matched once per ticker); a bad one is
    rejected each time, also once the memory is full and a new valid ticker is not kept."""
    monkeypatch.setattr(trades, "_checked_keys", {})
    monkeypatch.setattr(trades, "_CHECKED_TICKERS_MAX", 2)
    for name in ["A", "B", "C", "A", "C"]:
        value = json.dumps({"type": "BID", "ticker": name, "price": 1.5, "size": 3}).encode()
        assert decode_trade(name.encode(), value) == Trade("BID", name, 1.5, 3)
    assert trades._checked_keys == {"A": b"A", "B": b"B"}
    bad = b'{"type":"ASK","ticker":"M M","price":1,"size":1}'
    for _ in range(2):
        with pytest.raises(Rejected) as rejected:
            decode_trade(b"M M", bad)
        assert rejected.value.reason is Reason.BAD_TICKER
        assert "'M M'" in rejected.value.detail
    assert "M M" not in trades._checked_keys


def test_encode_round_trips_and_writes_the_original_field_names() -> None:
    trade = Trade("BID", "ABBV", 4999.5, 7)
    data = encode_trade(trade)
    assert data == b'{"type":"BID","ticker":"ABBV","price":4999.5,"size":7}'
    assert decode_trade(b"ABBV", data) == trade


@given(st.binary(max_size=80), st.one_of(st.none(), st.binary(max_size=8)))
def test_arbitrary_bytes_never_escape_as_anything_but_rejected(
    value: bytes, key: bytes | None
) -> None:
    assert_agrees_with_oracle(key, value)


def assert_agrees_with_oracle(key: bytes | None, value: bytes) -> None:
    """Both accept the same trade, or both reject (tradestats with a reason)."""
    try:
        trade: Trade | Rejected = decode_trade(key, value)
    except Rejected as rejected:
        trade = rejected
    if isinstance(trade, Rejected):
        assert trade.reason in Reason
        assert parse_trade(key, value) is None
    else:
        assert parse_trade(key, value) == (trade.ticker, trade.price, trade.size, trade.type)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.sampled_from(["ASK", "BID", "MMM", "A.B", ""]),
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(json_scalars, st.sampled_from(["ASK", "BID"])),
            "ticker": st.one_of(
                json_scalars, st.text(alphabet="ABCXYZabc019._-", min_size=1, max_size=32)
            ),
            "price": st.one_of(json_scalars, st.floats(min_value=1e-300, max_value=1e300)),
            "size": st.one_of(json_scalars, st.integers(0, 2**31 - 1)),
            "extra": json_scalars,
        },
    ),
    st.booleans(),
)
def test_structured_fuzz_agrees_with_the_oracle(obj: dict, key_matches: bool) -> None:
    value = json.dumps(obj).encode()
    ticker = obj.get("ticker")
    key = ticker.encode() if key_matches and isinstance(ticker, str) else b"OTHER"
    assert_agrees_with_oracle(key, value)
