"""The in-process caches of evaluation: one per concern, all emptied by :func:`clear_caches`.

Report texts repeat (a training loop's validation scores the same references again and again;
generated reports repeat sentences such as "No pneumothorax."), so the slow steps remember their
results, each in exactly one place:

- ``"chexpert labels"``: a report text -> its 14 CheXpert-style labels (:mod:`evaluation.chexpert`);
- ``"chexpert sentences"``: a sentence -> its labelled mentions (inside the labeler);
- ``"radgraph graphs"``: (extractor, report text) -> its graph and reward sets
  (:mod:`evaluation.radgraph`);
- ``"extractor sentences"``: a sentence -> its entities and relations (inside the rules extractor).

:class:`TextCache` holds values computed for many keys at a time and starts over when it holds
:data:`LIMIT` entries; :func:`memoize` is `functools.lru_cache` for one-key functions. Both
register themselves, so :func:`clear_caches` (``evaluation.clear_caches``) forgets everything, e.g.
for cold-start benchmarks. Cached values are shared: treat them as read-only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["LIMIT", "TextCache", "cache_sizes", "clear_caches", "memoize"]

LIMIT = 200_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
F = TypeVar("F", bound=Callable[..., Any])

_ABSENT: Any = object()

# name -> (clear, size) of every cache created so far
_REGISTERED: dict[str, tuple[Callable[[], None], Callable[[], int]]] = {}


def _register(name: str, clear: Callable[[], None], size: Callable[[], int]) -> None:
    if name in _REGISTERED:
        raise ValueError(f"a cache named {name!r} exists already; each concern has one cache")
    _REGISTERED[name] = (clear, size)


class TextCache(Generic[K, V]):
    """Values computed once per distinct key, many keys at a time, at most `limit` held."""

    def __init__(self, name: str, limit: int = LIMIT) -> None:
        self.name = name
        self.limit = limit
        self._values: dict[K, V] = {}
        _register(name, self.clear, self.__len__)

    def get_many(self, keys: Sequence[K], compute: Callable[[list[K]], Iterable[V]]) -> list[V]:
        """The value of every key, in order; `compute(missing keys)` runs once for keys not held."""
        values = self._values
        try:
            return [values[key] for key in keys]
        except KeyError:
            pass
        held: dict[K, V] = {}
        missing: list[K] = []
        for key in dict.fromkeys(keys):
            value = values.get(key, _ABSENT)
            if value is _ABSENT:
                missing.append(key)
            else:
                held[key] = value
        computed = dict(zip(missing, compute(missing), strict=True))
        if len(values) + len(computed) > self.limit:
            values.clear()
        values.update(computed)
        held.update(computed)
        return [held[key] for key in keys]

    def clear(self) -> None:
        """Forget every value."""
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


def memoize(name: str, maxsize: int) -> Callable[[F], F]:
    """`functools.lru_cache(maxsize)` registered under `name` (for functions of hashable keys)."""

    def decorate(function: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(function)
        _register(name, cached.cache_clear, lambda: cached.cache_info().currsize)
        return cached  # type: ignore[return-value]

    return decorate


def clear_caches() -> None:
    """Forget every cached extraction and labelling (the next call computes from scratch)."""
    for clear, _ in _REGISTERED.values():
        clear()


def cache_sizes() -> dict[str, int]:
    """Entries held by each cache created so far, by name."""
    return {name: size() for name, (_, size) in _REGISTERED.items()}
