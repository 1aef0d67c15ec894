"""The ready queue (ready.py) against a plain sorted list of (priority, id)."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beanstalk_py.job import Job
from beanstalk_py.ready import ReadyQueue
from beanstalk_py.tube import Tube

TUBE = Tube(b"default")


def job(job_id: int, pri: int) -> Job:
    return Job(job_id, pri, 0, 60, b"x\r\n", TUBE, 0)


def order(jobs: list[Job]) -> list[tuple[int, int]]:
    return [(j.pri, j.id) for j in jobs]


# Steps: ("add", pri) puts a new job; ("remove", k) takes out the k-th job held (mod count).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from([0, 1, 5, 1024, 2**31])),
        st.tuples(st.just("add"), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("remove"), st.integers(0, 1000)),
        st.tuples(st.just("bulk"), st.lists(st.sampled_from([0, 7, 65536]), max_size=6)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_serving_order_matches_a_sorted_model(script: list[tuple[str, object]]) -> None:
    queue = ReadyQueue()
    held: list[Job] = []
    next_id = 1
    for action, arg in script:
        if action == "add":
            assert isinstance(arg, int)
            new = job(next_id, arg)
            next_id += 1
            queue.add(new)
            held.append(new)
        elif action == "bulk":
            assert isinstance(arg, list)
            batch = [job(next_id + i, pri) for i, pri in enumerate(arg)]
            next_id += len(batch)
            queue.update(batch)
            held += batch
        elif held:
            assert isinstance(arg, int)
            gone = held.pop(arg % len(held))
            queue.remove(gone)
            assert gone not in queue
        model = sorted(held, key=lambda j: (j.pri, j.id))
        assert len(queue) == len(model) and bool(queue) == bool(model)
        assert order(list(queue)) == order(model)
        if model:
            assert queue.first() is model[0]
            assert all(j in queue for j in model)
            # Pages go on after any cursor, as the operations plane asks.
            middle = model[len(model) // 2]
            assert order(list(queue.after((middle.pri, middle.id)))) == order(model[len(model) // 2 + 1 :])
            heads = {}
            for j in model:
                heads.setdefault(j.pri, j)
            assert list(queue.heads(3)) == list(heads.values())[:3]
            assert queue.priorities() == len(heads)


def test_removing_a_job_that_is_not_there_is_an_error_and_changes_nothing() -> None:
    queue = ReadyQueue()
    kept = job(1, 5)
    queue.add(kept)
    with pytest.raises(ValueError):
        queue.remove(job(2, 5))  # same priority, other job
    with pytest.raises(ValueError):
        queue.remove(job(3, 6))  # a priority not in use
    assert list(queue) == [kept] and len(queue) == 1


def test_a_backlog_of_one_priority_costs_a_pointer_per_job_for_its_keys() -> None:
    """The reason for the layout: no key object per job (was a 32-40 byte int each)."""
    jobs = [job(10_000 + i, 1024) for i in range(20_000)]
    queue = ReadyQueue()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for each in jobs:
            queue.add(each)
        per_job = (tracemalloc.get_traced_memory()[0] - before) / len(jobs)
    finally:
        tracemalloc.stop()
    # Two pointers per job (the job and its key in sortedcontainers' lists),
    # plus list growth slack: measured 18-19 bytes; a key int per job would add 40.
    assert per_job < 30, per_job
