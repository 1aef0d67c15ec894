"""A tube's ready queue: lowest priority first, then lowest id (beanstalkd's ready heap).

Laid out for memory: the ready jobs of a backlog are most of what a big
queue holds.  One sorted list keyed by ``(pri << 64) | id`` held a fresh
int of 32-40 bytes per job for its key (tracemalloc, 200,000 jobs of 100 B:
32 of the 413 bytes a job cost).  Here each priority in use has its own
list keyed by the job's id, the very int object the job and the engine's id
table already hold, so a key costs one pointer.  A priority with a single
job keeps the job itself, not a list, so a client that gives every job its
own priority (a timestamp, say) pays a dict entry and a sorted-list entry
per job (about the 40 bytes saved elsewhere), not a list object each.

Applications use a handful of priorities, so the sorted list of priorities
in use is short and its first entry is the head's.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Union

from sortedcontainers import SortedKeyList, SortedList

from .job import Job


def _id_of(job: Job) -> Any:
    # Any, not int: a compiled int return would be unboxed and boxed anew
    # for the sorted list, a 32-byte int per job again (test_ready checks).
    return job.id


def _new_run(first: Job, second: Job) -> SortedKeyList:
    run = SortedKeyList(key=_id_of)
    run.update((first, second))
    return run


class ReadyQueue:
    """Ready jobs of one tube in serving order, O(log n) to add and remove."""

    __slots__ = ("_runs", "_pris", "_len")

    def __init__(self) -> None:
        # priority -> its only job, or its jobs sorted by id
        self._runs: dict[int, Union[Job, SortedKeyList]] = {}
        self._pris: SortedList = SortedList()  # priorities in use
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __contains__(self, job: Job) -> bool:
        run = self._runs.get(job.pri)
        if run is None:
            return False
        if isinstance(run, Job):
            return run is job
        return job in run

    def first(self) -> Job:
        """The job a reserve takes next (the queue must not be empty)."""
        run = self._runs[self._pris[0]]
        return run if isinstance(run, Job) else run[0]

    def add(self, job: Job) -> None:
        runs = self._runs
        pri = job.pri
        run = runs.get(pri)
        if run is None:
            runs[pri] = job
            self._pris.add(pri)
        elif isinstance(run, Job):
            runs[pri] = _new_run(run, job)
        else:
            run.add(job)
        self._len += 1

    def remove(self, job: Job) -> None:
        """Take ``job`` out; ValueError if it is not here."""
        runs = self._runs
        pri = job.pri
        run = runs.get(pri)
        if run is None or (isinstance(run, Job) and run is not job):
            raise ValueError(f"{job!r} is not in the ready queue")
        if isinstance(run, Job):
            del runs[pri]
            self._pris.remove(pri)
        else:
            run.remove(job)
            if len(run) == 1:
                runs[pri] = run[0]
        self._len -= 1

    def update(self, jobs: list[Job]) -> None:
        """Add many jobs at once (a restore): one bulk load per priority."""
        groups: dict[int, list[Job]] = {}
        for job in jobs:
            group = groups.get(job.pri)
            if group is None:
                groups[job.pri] = [job]
            else:
                group.append(job)
        for pri, group in groups.items():
            run = self._runs.get(pri)
            if run is None and len(group) == 1:
                self._runs[pri] = group[0]
                self._pris.add(pri)
            else:
                if run is None:
                    run = self._runs[pri] = SortedKeyList(key=_id_of)
                    self._pris.add(pri)
                elif isinstance(run, Job):
                    group.append(run)
                    run = self._runs[pri] = SortedKeyList(key=_id_of)
                run.update(group)
        self._len += len(jobs)

    def __iter__(self) -> Iterator[Job]:
        return self.after(None)

    def after(self, cursor: Optional[tuple[int, int]]) -> Iterator[Job]:
        """Jobs in serving order, those after ``cursor`` = (pri, id) only."""
        runs = self._runs
        start_pri = None if cursor is None else cursor[0]
        pris = self._pris if start_pri is None else self._pris.irange(start_pri)
        for pri in pris:
            run = runs[pri]
            if isinstance(run, Job):
                if cursor is None or pri > cursor[0] or run.id > cursor[1]:
                    yield run
            elif cursor is not None and pri == cursor[0]:
                yield from run.irange_key(cursor[1], inclusive=(False, True))
            else:
                yield from run

    def heads(self, count: int) -> Iterator[Job]:
        """The first job of each of the first ``count`` priorities in use."""
        runs = self._runs
        for pri in self._pris.islice(0, count):
            run = runs[pri]
            yield run if isinstance(run, Job) else run[0]

    def priorities(self) -> int:
        """How many priorities are in use."""
        return len(self._pris)
