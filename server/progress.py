"""Progress on stderr, only when a person is watching (a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def notice(message: str) -> None:
    """A short line on stderr for the person waiting (e.g. while a model loads); nothing when not a terminal."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[float], None] | None]:
    """Yields a callback taking the fraction done (0..1), or None when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=100, desc=label, unit="%", file=sys.stderr, leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def update(fraction: float) -> None:
        bar.update(round(100 * fraction) - bar.n)

    try:
        yield update
    finally:
        bar.close()
