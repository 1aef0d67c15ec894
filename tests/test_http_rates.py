"""RateHistory: exact rates and per-minute history from scripted counter
sequences on a fake clock, resets, tubes born and gone, the tube cap, the
hour's buckets turning over, and run() on trio's mock clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from beanstalk_py.http import rates
from beanstalk_py.http.rates import MAX_TRACKED_TUBES, MINUTES, SAMPLE_INTERVAL_S, RateHistory

S = 10**9  # ns in a second
ZEROS = {"put": 0.0, "reserve": 0.0, "delete": 0.0,
         "history": {"put": [0] * 60, "reserve": [0] * 60, "delete": [0] * 60}}


def _play(history: RateHistory, totals: list[tuple[int, int, int]], start_s: int = 0,
          name: bytes = b"mail") -> int:
    """Sample one tube's totals every 10 s from ``start_s``; the time after the last sample."""
    t = start_s
    for puts, reserves, deletes in totals:
        history.sample([(name, puts, reserves, deletes)], t * S)
        t += SAMPLE_INTERVAL_S
    return t


def test_zeros_until_two_samples_and_for_unknown_tubes() -> None:
    history = RateHistory()
    assert history.tube(b"mail") == ZEROS
    history.sample([(b"mail", 5, 3, 1)], 0)
    assert history.tube(b"mail") == ZEROS  # one sample: no interval yet
    history.sample([(b"mail", 5, 3, 1)], 10 * S)
    assert history.tube(b"mail") == ZEROS  # nothing happened
    assert history.tube(b"nothing") == ZEROS


def test_exact_rates_and_history() -> None:
    history = RateHistory()
    puts = [100, 103, 103, 115, 120, 127, 128, 137, 137]  # at 0, 10, ... 80 s
    _play(history, [(p, p // 2, p // 4) for p in puts])
    out = history.tube(b"mail")
    # The last minute: the 6 intervals from 20 s to 80 s.
    assert out["put"] == pytest.approx((137 - 103) / 60)
    assert out["reserve"] == pytest.approx((68 - 51) / 60)
    assert out["delete"] == pytest.approx((34 - 25) / 60)
    # Minute 0 holds the changes sampled at 10..50 s, minute 1 those at 60..80 s.
    assert out["history"]["put"] == [0] * 58 + [127 - 100, 137 - 127]
    assert out["history"]["reserve"] == [0] * 58 + [63 - 50, 68 - 63]
    assert out["history"]["delete"] == [0] * 58 + [31 - 25, 34 - 31]
    assert set(out) == {"put", "reserve", "delete", "history"}
    assert all(len(v) == MINUTES and all(type(x) is int for x in v) for v in out["history"].values())


def test_a_young_history_uses_the_time_it_has() -> None:
    history = RateHistory()
    _play(history, [(0, 0, 0), (20, 10, 5), (50, 25, 5)])
    assert history.tube(b"mail")["put"] == pytest.approx(50 / 20)
    # Samples late by a second each: the real time between them counts.
    history = RateHistory()
    history.sample([(b"mail", 0, 0, 0)], 0)
    history.sample([(b"mail", 33, 0, 0)], 11 * S)
    assert history.tube(b"mail")["put"] == pytest.approx(3.0)


def test_a_counter_that_goes_down_is_a_reset() -> None:
    history = RateHistory()
    # The tube was freed after 20 s and made again: its totals start from 0.
    _play(history, [(500, 400, 300), (520, 410, 320), (6, 2, 1), (10, 4, 1)])
    out = history.tube(b"mail")
    assert out["put"] == pytest.approx((20 + 6 + 4) / 30)
    assert out["reserve"] == pytest.approx((10 + 2 + 2) / 30)
    assert out["delete"] == pytest.approx((20 + 1 + 0) / 30)
    assert out["history"]["put"][-1] == 30 and min(out["history"]["put"]) == 0


def test_tubes_born_later_count_from_zero_and_the_first_sample_is_a_baseline() -> None:
    history = RateHistory()
    history.sample([(b"default", 1000, 900, 800)], 0)  # totals from before: not this minute's
    history.sample([(b"default", 1000, 900, 800), (b"new", 7, 3, 1)], 10 * S)  # made since
    assert history.tube(b"default") == ZEROS
    new = history.tube(b"new")
    assert (new["put"], new["reserve"], new["delete"]) == pytest.approx((0.7, 0.3, 0.1))
    assert new["history"]["put"][-1] == 7


def test_a_tube_that_goes_fades_and_is_forgotten_after_an_hour() -> None:
    history = RateHistory()
    t = _play(history, [(0, 0, 0), (60, 30, 30)], name=b"gone")
    for _ in range(6):  # a minute without it
        history.sample([(b"other", 0, 0, 0)], t * S)
        t += SAMPLE_INTERVAL_S
    out = history.tube(b"gone")
    assert out["put"] == 0.0 and sum(out["history"]["put"]) == 60  # the history stays
    assert len(history) == 2
    while t < 10 + 3600:
        history.sample([(b"other", 0, 0, 0)], t * S)
        t += SAMPLE_INTERVAL_S
    assert len(history) == 2  # last listed at 10 s: kept until 3,610 s
    history.sample([(b"other", 0, 0, 0)], t * S)
    assert len(history) == 1 and history.tube(b"gone") == ZEROS


def test_the_tube_cap() -> None:
    history = RateHistory()
    names = [b"t%04d" % i for i in range(MAX_TRACKED_TUBES + 5)]
    extra = names[-5:]
    history.sample([(name, 0, 0, 0) for name in names], 0)
    history.sample([(name, 10, 10, 10) for name in names], 10 * S)
    assert len(history) == MAX_TRACKED_TUBES
    assert history.tube(names[0])["put"] == 1.0
    assert all(history.tube(name) == ZEROS for name in extra)
    # After an hour without the first five, the others get their places; their
    # totals then are older than the last interval (not counted).
    t = 20
    while t <= 10 + 3600 + 10:  # dropped at 3,610 s, the others taken at 3,620 s
        history.sample([(name, 10, 10, 10) for name in names[5:]], t * S)
        t += SAMPLE_INTERVAL_S
    assert len(history) == MAX_TRACKED_TUBES and all(history.tube(name) == ZEROS for name in names[:5])
    history.sample([(name, 13, 10, 10) for name in names[5:]], t * S)
    assert history.tube(extra[0])["put"] == pytest.approx(3 / 60)
    assert history.tube(extra[0])["history"]["put"][-1] == 3


def test_the_hour_turns_over() -> None:
    history = RateHistory()
    # A burst in minute 0 (sampled at 10 s), then one put a second for an hour.
    history.sample([(b"mail", 0, 0, 0)], 0)
    history.sample([(b"mail", 1000, 0, 0)], 10 * S)
    puts, t = 1000, 20
    while t < 60 * 60:
        puts += 10
        history.sample([(b"mail", puts, 0, 0)], t * S)
        t += SAMPLE_INTERVAL_S
    put = history.tube(b"mail")["history"]["put"]  # minutes 0..59, the last partial
    assert put[0] == 1000 + 4 * 10 and put[1:] == [60] * 59
    puts += 10
    history.sample([(b"mail", puts, 0, 0)], 3600 * S)  # minute 60: minute 0 drops out
    put = history.tube(b"mail")["history"]["put"]
    assert put == [60] * 59 + [10]
    assert history.tube(b"mail")["put"] == pytest.approx(1.0)
    # The sampler stood still for over an hour: everything before is gone.
    history.sample([(b"mail", puts + 5, 0, 0)], (3600 + 2 * 3600) * S)
    out = history.tube(b"mail")
    assert out["history"]["put"] == [0] * 59 + [5]


def test_a_minute_without_samples_is_zero() -> None:
    history = RateHistory()
    history.sample([(b"mail", 0, 0, 0)], 50 * S)
    history.sample([(b"mail", 4, 0, 0)], 55 * S)  # minute 0
    history.sample([(b"mail", 9, 0, 0)], 185 * S)  # minute 3; minutes 1 and 2 empty
    assert history.tube(b"mail")["history"]["put"][-4:] == [4, 0, 0, 5]


async def test_run_samples_at_once_then_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    history = RateHistory()
    reads: list[float] = []

    def read() -> list[tuple[bytes, int, int, int]]:
        reads.append(trio.current_time())
        n = len(reads)
        return [(b"mail", 10 * n, 5 * n, n)]

    def clock() -> int:
        return int(trio.current_time() * S)

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(history.run, read, clock)
        await trio.sleep(35)
        nursery.cancel_scope.cancel()
    assert [round(t - start, 6) for t in reads] == [0, 10, 20, 30]
    out: dict[str, Any] = history.tube(b"mail")
    assert (out["put"], out["reserve"], out["delete"]) == pytest.approx((1.0, 0.5, 0.1))


async def test_run_survives_a_failed_read(autojump_clock: trio.testing.MockClock,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    history = RateHistory()
    calls = 0

    def read() -> list[tuple[bytes, int, int, int]]:
        nonlocal calls
        calls += 1
        if calls in (2, 3):
            raise RuntimeError("the store answered later")
        return [(b"mail", 10 * calls, 0, 0)]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(history.run, read, lambda: int(trio.current_time() * S))
        await trio.sleep(45)
        nursery.cancel_scope.cancel()
    assert calls == 5
    assert history.tube(b"mail")["put"] == pytest.approx(1.0)  # samples at 0, 30 and 40 s
    assert capsys.readouterr().err.count("a sample failed") == 1


def test_module_figures() -> None:
    assert rates.RATE_SAMPLES * SAMPLE_INTERVAL_S == 60 and MAX_TRACKED_TUBES == 1000
