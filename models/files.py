"""Files cliplive writes: atomic output (a reader never sees half a file, and a failed write leaves the old one
in place), and the cache directory for what is computed once (exports, embeddings, fetched media)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """`CLIPLIVE_CACHE`, else `$XDG_CACHE_HOME/cliplive`, else ~/.cache/cliplive."""
    return Path(os.environ.get("CLIPLIVE_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cliplive"))


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `target` to write; renamed onto `target` when the block succeeds,
    deleted when it fails. The file gets the usual permissions (umask), not mkstemp's private 0600."""
    target = Path(target)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".part{suffix}")
    os.close(handle)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
