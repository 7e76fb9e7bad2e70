"""Seeds and mutations for the loader fuzz tests (tests/test_fuzz_loaders.py).

Each loader is fuzzed from small valid files written by fourreal's own writers: hypothesis
draws structured mutations (JSON values swapped for hostile ones, header numbers swapped for
0, -1, 10^8, 2^64 ..., tensors dropped or reshaped) and byte-level ones (flips, truncation,
insertion, deletion) of those seeds.
"""

from __future__ import annotations

import json
import re
import resource
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourreal.errors import FourrealError

INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32, 10**8,
                    10**12, 2**63, 2**64 + 1, -(2**31)]  # fmt: skip
SECONDS_PER_INPUT = 10.0  # generous: the machine may be loaded; typical inputs take ~10 ms
RSS_GROWTH_LIMIT = 512 << 20  # peak memory may not grow by more than this during a fuzz test

COUNTS: Counter[str] = Counter()  # inputs tried per loader, reported at the end of the run
FAILURES: Counter[str] = Counter()  # typed errors per loader (expected: most inputs)
UNTYPED: Counter[str] = Counter()  # any other exception (each one fails its test)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from(INTERESTING_INTS)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out += _paths(value, (*prefix, index))
    return out


def mutate_json(data: st.DataObject, obj: Any) -> Any:
    """``obj`` (a JSON value) with one to three random parts replaced, deleted or added."""
    obj = json.loads(json.dumps(obj))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(obj)
        path = data.draw(st.sampled_from(paths))
        op = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        value = data.draw(json_values)
        if not path:
            obj = value
            continue
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=6))] = value
        else:
            parent[path[-1]] = value
    return obj


def mutate_bytes(data: st.DataObject, seed: bytes) -> bytes:
    """``seed`` with one to four byte-level edits: flips, numbers in text swapped for extreme
    ones, truncation, insertion, deletion."""
    out = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "number", "truncate", "insert", "delete"]))
        n = len(out)
        if op == "flip" and n:
            at = data.draw(st.integers(0, n - 1))
            out[at] = data.draw(st.integers(0, 255))
        elif op == "number":
            runs = [m.span() for m in re.finditer(rb"\d+", bytes(out[:4096]))]
            if runs:
                a, b = data.draw(st.sampled_from(runs))
                number = data.draw(st.sampled_from(INTERESTING_INTS))
                out[a:b] = str(number).encode()
        elif op == "truncate":
            del out[data.draw(st.integers(0, n)) :]
        elif op == "insert":
            at = data.draw(st.integers(0, n))
            out[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            a = data.draw(st.integers(0, n - 1))
            del out[a : a + data.draw(st.integers(1, 64))]
    return bytes(out)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fuzz(
    name: str,
    examples: int,
    prepare: Callable[[st.DataObject], tuple[Any, Callable[[], Any]]],
    valid: Callable[[Any], None] = lambda result: None,
) -> None:
    """Try ``examples`` inputs of one loader (deterministically) and check how each one ends.

    ``prepare(data)`` draws one input, writes its files and returns ``(where, load)``; ``load()``
    must return a value (then ``valid(value)`` checks it) or raise a :class:`FourrealError` whose
    message names ``where``. Any other exception fails the test, as does an input slower than
    :data:`SECONDS_PER_INPUT` or peak memory growing by more than :data:`RSS_GROWTH_LIMIT`.
    """
    start_rss = peak_rss()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(st.data())
    def run(data: st.DataObject) -> None:
        where, load = prepare(data)
        COUNTS[name] += 1
        started = time.perf_counter()
        try:
            result = load()
        except FourrealError as err:
            FAILURES[name] += 1
            assert str(where) in str(err), f"{name}: the error does not name {where}: {err}"
        except Exception:
            UNTYPED[name] += 1
            raise
        else:
            valid(result)
        elapsed = time.perf_counter() - started
        assert elapsed < SECONDS_PER_INPUT, f"{name}: one input took {elapsed:.1f} s"

    run()
    grown = peak_rss() - start_rss
    assert grown < RSS_GROWTH_LIMIT, f"{name}: peak memory grew by {grown >> 20} MiB"
