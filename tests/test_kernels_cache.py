"""Numba's cache is dropped when any kernel module changes (it keys on the kernel's own file)."""

from __future__ import annotations

from pathlib import Path

from device.kernels.cache import drop_stale, sources_digest


def test_cache_is_dropped_when_a_helper_module_changes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "deviation.py").write_text("kernel\n")
    (src / "evidence.py").write_text("helper v1\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "deviation._process_kernel-1.py311.nbi").write_text("index")
    (cache / "deviation._process_kernel-1.py311.1.nbc").write_text("code")
    assert drop_stale(cache, src)  # no stamp yet: whatever is there may be stale
    (cache / "deviation._process_kernel-1.py311.nbi").write_text("index")  # compiled again
    assert not drop_stale(cache, src)  # unchanged sources: kept
    assert (cache / "deviation._process_kernel-1.py311.nbi").exists()
    d1 = sources_digest(src)
    (src / "evidence.py").write_text("helper v2\n")  # only the helper's file changes
    assert sources_digest(src) != d1
    assert drop_stale(cache, src)
    assert not list(cache.glob("*.nb*"))
