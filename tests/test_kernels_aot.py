"""The ahead-of-time kernels == the JIT kernels == their plain-Python twins (tests/naive.py).

AOT and JIT compile the same kernel bodies with the same flags, so they must agree to the bit
(``assert_array_equal``, NaN where NaN); the twins are plain Python, so they agree within the
kernel tolerances. The AOT module is the one ``scripts/setup`` builds (built here when missing).
Under ``NUMBA_DISABLE_JIT=1`` the "JIT" side is the kernels' own Python bodies.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import naive
import numpy as np
import numpy.testing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_kernels_deviation import FAST, T0, _run_naive, streams

from device.detect.engine import EngineConfig
from device.inference.classifier import features, resample
from device.kernels import config, loader
from device.kernels import layout as L
from device.kernels.abi import EXPORTS
from device.kernels.loader import Kernels
from firmware_sim.motion import accel_window

REPO = Path(__file__).resolve().parents[1]
TOL = {"rtol": config.EDGELOOP_TEST_RTOL, "atol": config.EDGELOOP_TEST_ATOL}
SET = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def aot() -> Kernels:
    k = loader.load("aot")  # builds into the kernel directory in a subprocess if missing
    assert k.path == "aot" and Path(k.module).exists()
    return k


@pytest.fixture(scope="module")
def jit() -> Kernels:
    k = loader.load("jit")
    assert k.path in ("jit", "python")
    return k


def _same(a: object, j: object, jit: Kernels) -> None:
    """AOT == JIT to the bit; against the uncompiled bodies (NUMBA_DISABLE_JIT) within tolerance
    (numpy's scalar exp need not round as libm's does)."""
    if jit.path == "jit":
        npt.assert_array_equal(a, j)
    else:
        npt.assert_allclose(np.asarray(a, dtype=float), np.asarray(j, dtype=float), **TOL)


def _process(k: Kernels, cfg: EngineConfig, ts: np.ndarray, vals: np.ndarray,
             dirs: list[int]) -> tuple[np.ndarray, ...]:
    n, m = vals.shape
    st_, eng = L.new_state(m)
    st_[:, L.M_DIR] = dirs
    out = np.empty((L.N_OUT, n, m))
    rows = np.empty((L.N_ROW, n))
    flags = np.empty(n, dtype=np.uint8)
    k.process(cfg.vector(), st_, eng, np.ascontiguousarray(ts), np.ascontiguousarray(vals), out,
              rows, flags)  # fmt: skip
    return out, rows, flags, st_, eng


@SET
@given(s=streams(), fast=st.booleans())
def test_process_aot_equals_jit_equals_naive(aot: Kernels, jit: Kernels, s: tuple,
                                             fast: bool) -> None:
    ts, vals, dirs = s
    cfg = FAST if fast else EngineConfig()
    a = _process(aot, cfg, ts, vals, dirs)
    j = _process(jit, cfg, ts, vals, dirs)
    for x, y in zip(a, j, strict=True):
        _same(x, y, jit)
    ref = _run_naive(ts, vals, dirs, cfg)
    out, rows, flags = a[:3]
    npt.assert_allclose(out[L.O_SCORE], ref["score"], **TOL)
    npt.assert_allclose(out[L.O_PERS], ref["pers"], **TOL)
    npt.assert_allclose(out[L.O_BASE], ref["base"], **TOL)
    npt.assert_allclose(rows[L.R_COMB], ref["comb"], **TOL)
    npt.assert_array_equal(flags, ref["flags"])
    npt.assert_array_equal(rows[L.R_EVENT] > 0, ref["event"])


@SET
@given(s=streams(max_rows=60, n_metrics=3))
def test_step_aot_equals_jit_row_by_row(aot: Kernels, jit: Kernels, s: tuple) -> None:
    ts, vals, dirs = s
    works = []
    for k in (aot, jit):
        m = vals.shape[1]
        work = np.zeros(L.work_size(m))
        work[0] = m
        v = L.work_views(work, m)
        v["cfg"][:] = FAST.vector()
        v["st"][:], v["eng"][:] = L.new_state(m)
        v["st"][:, L.M_DIR] = dirs
        flags = np.zeros(1, dtype=np.uint8)
        trail = []
        for t, row in zip(ts, vals, strict=True):
            v["ts"][0] = t
            v["vals"][0] = row
            k.step(work, flags)
            trail.append((work.copy(), int(flags[0])))
        works.append(trail)
    for (wa, fa), (wj, fj) in zip(*works, strict=True):
        _same(wa, wj, jit)
        assert fa == fj


@SET
@given(s=streams(max_rows=80, n_metrics=1), h=st.integers(0, 23), dt=st.floats(-1e5, 1e7),
       x=st.floats(-200, 200), u=st.floats(0, 60))
def test_baseline_and_learn_aot_equal_jit(aot: Kernels, jit: Kernels, s: tuple, h: int,
                                          dt: float, x: float, u: float) -> None:
    ts, vals, dirs = s
    st_ = _process(jit, FAST, ts, vals, dirs)[3]  # a state row that has learnt something
    cfg = FAST.vector()
    t = float(np.nanmax(np.r_[ts, T0])) + dt
    got = [k.baseline(cfg, st_[0].copy(), h, t) for k in (aot, jit)]
    _same(got[0], got[1], jit)
    base, sd = got[0]
    rows = []
    for k in (aot, jit):
        row = st_[0].copy()
        k.learn(cfg, row, h, t, x, base, sd, u)
        rows.append(row)
    _same(rows[0], rows[1], jit)


@SET
@given(st.floats(0, 1e6), st.floats(-1e4, 1e4), st.floats(0, 1e6), st.floats(-1e6, 1e6),
       st.floats(0, 1e7), st.floats(0, 100))
def test_welford_aot_equals_jit_equals_naive(aot: Kernels, jit: Kernels, w: float, mean: float,
                                             m2: float, dt: float, mem: float, u: float) -> None:
    for name, args, ref in (
        ("decay", (w, m2, dt, mem), naive.decay(w, m2, dt, mem)),
        ("update", (w, mean, m2, dt / 100, u), naive.welford_update(w, mean, m2, dt / 100, u)),
        ("merge", (w, mean, m2, u, dt / 100, mem), None),
    ):
        a, j = getattr(aot, name)(*args), getattr(jit, name)(*args)
        _same(a, j, jit)
        if ref is not None:
            npt.assert_allclose(a, ref, rtol=1e-12, atol=1e-9)
    # merge's twin: feeding both samples into one statistic
    sa, sb = naive.welford_batch([1.0, mean], [1.0, u]), naive.welford_batch([dt / 100], [1.0])
    npt.assert_allclose(aot.merge(*sa, *sb), naive.welford_batch([1.0, mean, dt / 100], [1.0, u, 1.0]),
                        rtol=1e-8, atol=1e-6)  # fmt: skip


@SET
@given(st.data())
def test_resting_hr_aot_equals_jit_equals_naive(aot: Kernels, jit: Kernels,
                                                data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 120))
    t_hr = np.sort(data.draw(arrays(np.float64, n, elements=st.floats(0, 7200))))
    hr = data.draw(arrays(np.float64, n, elements=st.floats(30, 200)))
    t_st = 60.0 * np.sort(data.draw(arrays(np.int64, n, elements=st.integers(0, 120)))).astype(float)
    steps = data.draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 0.0, 0.0, 5.0])))
    q = data.draw(st.integers(1, 15))
    a = aot.resting_hr(t_hr, hr, t_st, steps, q)
    j = jit.resting_hr(t_hr, hr, t_st, steps, q)
    for x, y in zip(a, j, strict=True):
        _same(x, y, jit)
    ref = naive.resting_hr(t_hr, hr, t_st, steps, q)
    npt.assert_allclose(a[0], ref[0])
    npt.assert_allclose(a[1], ref[1], rtol=1e-12)


@SET
@given(activity=st.sampled_from(["rest", "walk", "run", "eat", "play", "sleep"]),
       rate=st.floats(8.0, 100.0), seconds=st.floats(2.0, 8.0), seed=st.integers(0, 10_000))
def test_prep_aot_equals_jit_equals_reference(aot: Kernels, jit: Kernels, activity: str,
                                              rate: float, seconds: float, seed: int) -> None:
    n = max(2, int(seconds * rate))
    w = accel_window(activity, n, rate, np.random.default_rng(seed)).astype(np.float64)
    a, j = aot.prep(w, rate, 20.0, 80), jit.prep(w, rate, 20.0, 80)
    assert a.dtype == np.float32 and a.shape == (80, 4)
    _same(a, j, jit)
    npt.assert_allclose(a, features(resample(w, rate)), atol=2e-5)


def test_the_aot_module_exports_every_kernel_and_checks_its_arrays(aot: Kernels) -> None:
    assert set(EXPORTS) == {f for f in Kernels.__dataclass_fields__ if callable(getattr(aot, f))}
    cfg, st_, eng = EngineConfig().vector(), *L.new_state(1)
    ts, vals = T0 + 60.0 * np.arange(3), np.ones((3, 1))
    out, rows, flags = np.empty((L.N_OUT, 3, 1)), np.empty((L.N_ROW, 3)), np.empty(3, np.uint8)
    with pytest.raises(TypeError, match="argument 5 is written in place"):
        aot.process(cfg, st_, eng, ts, vals, out[:, ::2], rows, flags)  # a strided view
    with pytest.raises(TypeError, match="argument 7"):
        aot.process(cfg, st_, eng, ts, vals, out, rows, flags.astype(np.int64))
    with pytest.raises(TypeError, match="must be 2-d"):
        aot.process(cfg, st_, eng, ts, vals.ravel(), out, rows, flags)
    # inputs are converted like numpy would: lists, float32, strided are fine
    aot.process(list(cfg), st_, eng, ts.tolist(), vals.astype(np.float32), out, rows, flags)
    assert flags.tolist() == [8, 8, 8]


def test_a_stale_or_missing_module_falls_back_to_the_jit_and_says_why(tmp_path: Path,
                                                                      aot: Kernels) -> None:
    k = loader.load("auto", directory=tmp_path)
    assert k.path in ("jit", "python") and k.module == ""
    if k.path == "jit":
        assert "no AOT module for these kernels" in k.reason and "none built there" in k.reason
    # a module built from other sources (another fingerprint) is never loaded
    other = tmp_path / Path(aot.module).name.replace(aot.fingerprint[:16], "0" * 16)
    other.write_bytes(Path(aot.module).read_bytes())
    k = loader.load("auto", directory=tmp_path)
    assert k.path in ("jit", "python")
    if k.path == "jit":
        assert "1 module(s) there were built from other kernel sources" in k.reason
    # a corrupt module with the right name: auto runs the JIT, aot refuses
    (tmp_path / Path(aot.module).name).write_bytes(b"not an ELF file")
    if k.path == "jit":
        assert "cannot load the AOT module" in loader.load("auto", directory=tmp_path).reason
    with pytest.raises(loader.KernelsUnavailable, match="cannot load the AOT module"):
        loader.load("aot", directory=tmp_path)
    with pytest.raises(loader.KernelsUnavailable, match="expected one of auto, aot, jit"):
        loader.load("fast")


def test_another_numpy_makes_the_module_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module is compiled against the pinned numpy's C API: another numpy never loads it."""
    before = loader.fingerprint()
    monkeypatch.setattr(loader.np, "__version__", "2.5.0")
    assert loader.fingerprint() != before
    assert loader.module_name(loader.fingerprint()) != loader.module_name(before)


def test_the_fingerprint_follows_every_kernel_source(tmp_path: Path) -> None:
    """Everything the kernels import from the project is hashed: a change anywhere in what the
    AOT module is compiled from makes it stale (never a silently outdated kernel)."""
    import ast

    files = {p.relative_to(REPO).as_posix() for p in loader.source_files()}
    todo = [EXPORTS[n].module for n in EXPORTS]
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = REPO / (mod.replace(".", "/") + ".py")
        assert path.relative_to(REPO).as_posix() in files, f"{mod} is compiled but not fingerprinted"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                    "device", "shared", "cloud", "edgeloop", "firmware_sim", "fleet_sim"):
                for a in node.names:  # "from device.kernels import config" names a module
                    sub = f"{node.module}.{a.name}"
                    todo.append(sub if (REPO / (sub.replace(".", "/") + ".py")).exists() else node.module)
    assert "device/kernels/loader.py" not in files, "choosing the kernels does not change them"


def _replay(trace: Path, out: Path, mode: str) -> tuple[str, bytes]:
    env = {**os.environ, "EDGELOOP_KERNELS": mode}
    env.pop("NUMBA_DISABLE_JIT", None)
    r = subprocess.run([sys.executable, "-m", "edgeloop", "replay", "trace", str(trace), "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    with sqlite3.connect(out / "state" / "outbox.db") as db:
        state = db.execute("SELECT value FROM kv WHERE key = 'engine_state'").fetchone()[0]
    return (out / "events.jsonl").read_text(), bytes(state)


def test_a_trace_replayed_on_both_paths_gives_the_same_events(tmp_path: Path, aot: Kernels) -> None:
    """The whole agent (frames, classifier, engine, events with their traces) on an 8-day collar
    trace with an illness: the same events, byte for byte, and the same final engine state."""
    trace = tmp_path / "collar.trace"
    subprocess.run([sys.executable, "-m", "edgeloop", "sim", "--days", "8", "--index", "0",
                    "--trace", str(trace)], check=True, capture_output=True, timeout=300, cwd=REPO)
    ev_aot, st_aot = _replay(trace, tmp_path / "aot", "aot")
    ev_jit, st_jit = _replay(trace, tmp_path / "jit", "jit")
    events = [json.loads(line) for line in ev_aot.splitlines()]
    assert events and all(e["kind"] == "sustained" for e in events), "the illness is caught"
    assert ev_aot == ev_jit
    assert st_aot == st_jit


def test_the_kernel_directory_and_odd_installs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGELOOP_KERNEL_DIR", str(tmp_path / "k"))
    assert loader.kernel_dir() == tmp_path / "k"
    monkeypatch.delenv("EDGELOOP_KERNEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert loader.kernel_dir() == tmp_path / "c" / "edgeloop" / "kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(loader.Path, "home", staticmethod(no_home))
    assert f"edgeloop-cache-{os.getuid()}" in str(loader.kernel_dir()), "a service account without a home"
    # an install without the kernel sources: no module can be checked, so none is trusted
    monkeypatch.setattr(loader, "source_files", lambda: [REPO / "device" / "kernels" / "gone.py"])
    k = loader.load("auto", directory=tmp_path)
    assert k.path in ("jit", "python") and "cannot fingerprint the kernel sources" in k.reason
    with pytest.raises(loader.KernelsUnavailable, match="cannot fingerprint"):
        loader.load("aot", directory=tmp_path)
