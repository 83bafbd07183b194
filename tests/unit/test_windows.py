"""Window and pane arithmetic, checked against the definitions by brute force."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradestats.core.windows import WindowSpec


@st.composite
def specs(draw: st.DrawFn) -> WindowSpec:
    advance = draw(st.integers(1, 50))
    size = draw(st.integers(advance, 200))
    grace = draw(st.integers(0, 60))
    return WindowSpec(size, advance, grace)


def windows_containing(spec: WindowSpec, t: int) -> list[int]:
    """Definition: starts s, multiples of the advance, with s <= t < s + size."""
    return [
        s
        for s in range(t - spec.size_ms - spec.advance_ms, t + 1)
        if s % spec.advance_ms == 0 and s <= t < s + spec.size_ms
    ]


@given(specs(), st.integers(-1000, 1000))
def test_pane_windows_are_exactly_the_windows_of_each_instant_in_the_pane(
    spec: WindowSpec, t: int
) -> None:
    pane = spec.pane_start(t)
    assert pane <= t < pane + spec.pane_ms
    assert pane % spec.pane_ms == 0
    # every instant of the pane belongs to the same windows: that is what makes panes work
    for instant in range(pane, pane + spec.pane_ms):
        assert list(spec.windows_of_pane(pane)) == windows_containing(spec, instant)


@given(specs(), st.integers(-1000, 1000))
def test_window_is_the_union_of_its_panes(spec: WindowSpec, t: int) -> None:
    for start in windows_containing(spec, t):
        panes = list(spec.panes_of_window(start))
        assert panes[0] == start
        assert panes[-1] + spec.pane_ms == start + spec.size_ms
        assert spec.pane_start(t) in panes
        for pane in panes:
            assert start in spec.windows_of_pane(pane)
            assert list(spec.windows_of_pane(pane))[spec.window_index(pane, start)] == start


@given(specs(), st.integers(-1000, 1000), st.integers(-1000, 1200))
def test_eligibility_is_the_first_window_still_open(
    spec: WindowSpec, t: int, stream_time: int
) -> None:
    stream_time = max(stream_time, t)  # stream time includes the current trade
    windows = windows_containing(spec, t)
    open_flags = [s + spec.size_ms + spec.grace_ms > stream_time for s in windows]
    expected = open_flags.index(True) if any(open_flags) else None
    assert spec.eligibility(spec.pane_start(t), stream_time) == expected
    first_open = spec.first_open_window(stream_time)
    assert first_open % spec.advance_ms == 0
    assert (
        spec.close_time(first_open) > stream_time >= spec.close_time(first_open - spec.advance_ms)
    )


@given(specs(), st.integers(-1000, 1000))
def test_last_close_of_pane_is_when_its_newest_window_closes(spec: WindowSpec, t: int) -> None:
    pane = spec.pane_start(t)
    newest = max(windows_containing(spec, t))
    assert spec.last_close_of_pane(pane) == newest + spec.size_ms + spec.grace_ms


def test_default_windows_have_one_second_panes_and_five_windows_per_trade() -> None:
    spec = WindowSpec(5000, 1000)
    assert spec.pane_ms == 1000
    assert list(spec.windows_of_pane(12_000)) == [8000, 9000, 10_000, 11_000, 12_000]
    assert list(spec.panes_of_window(8000)) == [8000, 9000, 10_000, 11_000, 12_000]


def test_uneven_advance_uses_gcd_panes() -> None:
    spec = WindowSpec(5000, 3000)
    assert spec.pane_ms == 1000
    assert list(spec.windows_of_pane(2000)) == [0]
    assert list(spec.windows_of_pane(1000)) == [-3000, 0]


@pytest.mark.parametrize(
    ("size", "advance", "grace"), [(0, 1, 0), (5, 0, 0), (5, 6, 0), (5, 1, -1)]
)
def test_invalid_specs_are_rejected(size: int, advance: int, grace: int) -> None:
    with pytest.raises(ValueError, match="window"):
        WindowSpec(size, advance, grace)
