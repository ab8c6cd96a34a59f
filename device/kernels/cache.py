"""Numba's on-disk cache, kept honest across modules.

Numba keys a cached kernel on its *own* source file only, but the row kernel compiles in helpers
from the other modules here (``inline="always"``) and links the Welford kernels: an edit to
``evidence.py`` alone would leave the old compiled ``_process_kernel`` on disk. So the sources of
every module in this package are hashed, and when the hash differs from the one stored beside
the cache, every cached kernel of the package is dropped (and compiled again once).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

_STAMP = "edgeloop-kernels.sources"


def sources_digest(folder: Path) -> str:
    """sha1 over the package's module sources, in name order."""
    h = hashlib.sha1()
    for p in sorted(folder.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def drop_stale(cache_dir: str | Path, folder: Path) -> bool:
    """Drop the cached kernels in ``cache_dir`` when the sources in ``folder`` changed since they
    were cached; True when something was dropped. Never raises (a read-only cache is numba's to
    handle: it then compiles in memory)."""
    cache = Path(cache_dir)
    digest = sources_digest(folder)
    stamp = cache / _STAMP
    try:
        if stamp.exists() and stamp.read_text().strip() == digest:
            return False
        dropped = 0
        for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            f.unlink(missing_ok=True)
            dropped += 1
        cache.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
    except OSError as exc:
        logger.warning("kernels.cache_stamp_failed", extra={"error": str(exc)})
        return False
    if dropped:
        logger.info("kernels.cache_dropped", extra={"files": dropped})
    return dropped > 0
