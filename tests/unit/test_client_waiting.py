"""A waiter's long-polls never run past its deadline (``wait --timeout``, ``wait_for_output``).

The route takes fractions of a second, so the last long-poll is cut to the time left; the waiter
stops within a request of its deadline instead of holding a whole rounded-up second more.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from batch_outputs._shared import long_poll_seconds


@given(st.floats(min_value=-5, max_value=10_000, allow_nan=False))
def test_a_long_poll_never_outlasts_the_time_left(remaining: float) -> None:
    wait = long_poll_seconds(remaining)
    assert 0 <= wait <= 60
    assert wait <= max(0.0, remaining)
    assert wait == min(60.0, max(0.0, remaining))  # and is no shorter than it may be


def test_without_a_deadline_a_long_poll_holds_the_longest_the_route_allows() -> None:
    assert long_poll_seconds(None) == 60
