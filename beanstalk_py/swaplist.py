"""An ordered set whose removal moves the last item into the gap (beanstalkd's ms.c).

The reference keeps the tube list and every connection's watch list this way,
so ``list-tubes`` and ``list-tubes-watched`` come out in this order; we keep
it to answer with the same bytes.  Membership and removal are O(1).
"""

from __future__ import annotations

from typing import Generic, Hashable, Iterator, TypeVar

T = TypeVar("T", bound=Hashable)


class SwapList(Generic[T]):
    __slots__ = ("items", "_index")

    def __init__(self) -> None:
        self.items: list[T] = []
        self._index: dict[T, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def append(self, item: T) -> bool:
        """Add ``item`` at the end; False if it was already present."""
        if item in self._index:
            return False
        self._index[item] = len(self.items)
        self.items.append(item)
        return True

    def remove(self, item: T) -> bool:
        """Remove ``item``, moving the last item into its slot; False if absent."""
        pos = self._index.pop(item, None)
        if pos is None:
            return False
        last = self.items.pop()
        if pos < len(self.items):
            self.items[pos] = last
            self._index[last] = pos
        return True
