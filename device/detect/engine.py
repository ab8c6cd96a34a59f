"""The anomaly engine: a thin validating wrapper around :mod:`device.kernels.deviation`.

>>> import numpy as np
>>> eng = Engine(("resting_hr",))
>>> ts = 1_700_000_000.0 + 60.0 * np.arange(3)
>>> out = eng.process(ts, np.array([[60.0], [np.nan], [61.0]]))
>>> out.flags.tolist()  # 8 = warming up, 1 = missing value
[8, 9, 8]
>>> bool(np.isnan(out.combined).any()), eng.warming_up
(False, True)
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from device.kernels import layout as L
from device.kernels.loader import Kernels, kernels

logger = logging.getLogger(__name__)

_MAGIC = b"ELE5"  # ELE5: pattern novelty (ELE4: daily envelope per hour; ELE3: deviation
# envelope; ELE2: z-unit evidence)
NOVELTY_SEG_S = 0.0  # the pattern novelty channel's default segment length (0: off)
_O_SCORE, _O_PERS, _O_BASE, _O_SD, _O_LEVEL = L.O_SCORE, L.O_PERS, L.O_BASE, L.O_SD, L.O_LEVEL
_R_COMB, _R_EVENT = L.R_COMB, L.R_EVENT
_HEADER = struct.Struct("<4sHH")  # magic, n_metrics, n_state


def _as_float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


class EngineInputError(ValueError):
    """Input arrays or arguments do not have the expected shape, dtype or values."""


class EngineStateError(ValueError):
    """A serialised engine state cannot be restored (wrong format or metric count)."""


@dataclass(frozen=True)
class EngineConfig:
    """One set of defaults for every stream (minute wearables, 5-min NAB, hourly features).

    Times are seconds; "weight" is minutes of data (a sample covers the time since the previous
    row, capped at ``weight_cap_s``), so the same defaults work at any sampling rate.
    """

    memory_s: float = 14 * 86400.0  # time constant of baseline forgetting (long memory)
    weight_unit_s: float = 60.0  # seconds of data that count as weight 1
    weight_cap_s: float = 3600.0  # one sample never covers more than this (gaps)
    bin_prior: float = 120.0  # weight at which an hour-of-day bin gets half the say vs global
    huber_c: float = 3.0  # samples are winsorised at baseline +- huber_c * spread before learning
    sd_floor_rel: float = 0.01  # spread floor relative to |global mean|
    sd_floor_abs: float = 1e-6  # absolute spread floor
    max_abs_value: float = 1e12  # |value| beyond this is garbage: treated as missing (flag 1)
    bin_sd_floor: float = 0.1  # an hour bin's spread is at least this share of the global spread
    z_clip: float = 4.0  # instantaneous z is clipped here before smoothing (spikes count little)
    smooth_s: float = 3600.0  # time constant of the smoothed deviation and the observed level
    e_prior_weight: float = 1440.0  # weight of the prior RMS of the smoothed deviation
    e_prior_rms: float = 1.0  # prior RMS of the smoothed deviation (z units)
    e_rms_floor: float = 0.3  # floor of that RMS: a sustained shift must exceed 0.3 spread
    cusum_k: float = 1.0  # CUSUM allowance in standardised units
    cusum_h: float = 12.0  # CUSUM threshold in z-hours: persistence = sum / cusum_h
    cusum_cap: float = 1.5  # CUSUM sums are capped at cusum_cap * cusum_h (bounded recovery)
    zs_clip: float = 6.0  # standardised smoothed deviation clipped here (max rate per hour)
    spike_z0: float = 1.0  # z below this gives spike score 0
    spike_scale: float = 4.0  # spike score = 1 - exp(-(z - spike_z0) / spike_scale)
    warmup_s: float = 86400.0  # warm-up: at least this long since a metric's first sample ...
    warmup_n: float = 168.0  # ... and this many valid samples (a week of hourly features)
    protect_p: float = 0.5  # persistence above which the baseline is protected
    protect_weight: float = 0.02  # learning weight of samples while protected
    protect_max_s: float = 7 * 86400.0  # a deviation older than this becomes the new normal
    contrib_p: float = 0.5  # a metric contributes to an event at this persistence
    event_sum: float = 1.0  # an event fires when contributing persistence sums to this
    cooldown_s: float = 86400.0  # minimum time between two events
    gap_s: float = 3 * 3600.0  # a row this long after the previous one is flagged as a gap
    clock_jump_s: float = 30 * 86400.0  # a time step beyond +-this is a clock jump (accepted)
    surprise_short_s: float = 600.0  # combined score: short average of evidence ...
    surprise_long_s: float = 2 * 86400.0  # ... against its long-run mean and spread (memory)
    surprise_floor: float = 0.1  # floor of that long-run spread
    surprise_scale: float = 5.0  # combined = 1 - exp(-z / surprise_scale), z = standardised excess
    surprise_z_clip: float = 20.0  # evidence = min(|z|, clip) + min(|zs|, clip) (z units)
    refractory_s: float = 6 * 3600.0  # combined below its recent peak (decaying over this) ...
    refractory_factor: float = 0.5  # ... is multiplied by this (one high score per episode)
    refractory_level: float = 0.5  # once the peak is this high, a new score must beat it ...
    refractory_margin: float = 0.2  # ... by this much to pass undamped (one alert per rise)
    envelope_s: float = 2 * 86400.0  # memory of the largest past deviation (each sign) ...
    envelope_factor: float = 0.5  # ... of which this share is subtracted from |z| in the evidence
    surprise_step_cap: float = 1.5  # one row weighs at most this many typical steps in the short
    # average (the typical step is a running median of the time step; irregular streams)
    daily_env_s: float = 7 * 86400.0  # memory of big deviations per hour of day (0 = off) ...
    daily_env_z: float = 10.0  # ... with |z| >= this; one seen on two days at this hour ...
    daily_env_factor: float = 1.0  # ... is subtracted (this share) from a new one's |z|
    novelty_seg_s: float = NOVELTY_SEG_S  # pattern novelty: segment length (0 = off) ...
    novelty_vigilance: float = 0.9  # ... a shape this similar to a category resonates ...
    novelty_rate: float = 0.1  # ... and the category learns it at this rate ...
    novelty_memory_s: float = 3 * 86400.0  # ... categories and the novelty's null forget this ...
    novelty_min_segments: float = 48.0  # ... and novelty scores after this many segments
    warning_score: float = 0.5  # event score at which severity becomes "warning"
    critical_score: float = 0.8  # event score at which severity becomes "critical"

    def vector(self) -> np.ndarray:
        """The kernel's config vector (fields in :data:`device.kernels.deviation.CFG_FIELDS`)."""
        return np.array([float(getattr(self, f)) for f in L.CFG_FIELDS], dtype=np.float64)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not np.isfinite(v) or v < 0:
                raise EngineInputError(
                    f"EngineConfig.{f.name} must be a finite number >= 0, found {v!r}; "
                    "use the default or a non-negative value"
                )
        for name in (
            "weight_unit_s",
            "envelope_s",
            "smooth_s",
            "cusum_h",
            "spike_scale",
            "surprise_short_s",
            "surprise_scale",
            "refractory_s",
            "novelty_memory_s",
        ):
            if getattr(self, name) == 0:
                raise EngineInputError(f"EngineConfig.{name} must be > 0, found 0")


@dataclass(frozen=True)
class DeviationEvent:
    """A confirmed sustained deviation of one or more metrics."""

    start_ts: float  # epoch seconds when the sustained deviation began (first contributing sample)
    ts: float  # epoch seconds when it was confirmed (the detection time)
    metrics: tuple[str, ...]  # contributing metrics
    directions: tuple[int, ...]  # +1 above baseline, -1 below, per metric
    score: float  # combined evidence in [0, 1]
    severity: str  # "info" | "warning" | "critical"
    kind: str  # "sustained" (spikes are scored but never become events)
    baseline: tuple[float, ...]  # baseline value per contributing metric at detection
    observed: tuple[float, ...]  # recent observed level per contributing metric


@dataclass
class EngineOutput:
    """Per-row results of :meth:`Engine.process` (n rows, m metrics)."""

    scores: np.ndarray  # (n, m) instantaneous deviation in [0, 1], never NaN
    persistence: np.ndarray  # (n, m) CUSUM persistence normalised to [0, 1]
    combined: np.ndarray  # (n,) combined anomaly score in [0, 1], never NaN
    flags: np.ndarray  # (n,) uint8: 1 missing, 2 out-of-order/repeat, 4 gap, 8 warm-up, 16 clock
    events: list[DeviationEvent]
    baseline: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # (n, m) baseline
    spread: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # (n, m) baseline spread
    level: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # (n, m) observed level
    novelty: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # (n, m) pattern novelty
    # z of the segment a sample closed (0 elsewhere, and always 0 with novelty_seg_s = 0)


# ELE2 rows are ELE4 rows without the two envelope slots (M_ENVP, M_ENVN) and the daily envelope
# (72 slots at the end), ELE3 rows without the daily envelope, ELE4 rows without the pattern
# novelty (177 slots at the end): an upgraded agent keeps everything it learnt; the missing parts
# start empty ("nothing seen lately", no shapes known)
_OLD_N_STATE = {b"ELE2": 116, b"ELE3": 118, b"ELE4": 190}


def _upgrade_state(data: bytes) -> bytes:
    """ELE2 / ELE3 / ELE4 state -> ELE5 (other bytes are returned as they are, for from_state to
    judge)."""
    if data[:4] not in _OLD_N_STATE or len(data) < _HEADER.size:
        return data
    _, m, n_state = _HEADER.unpack_from(data)
    if n_state != _OLD_N_STATE[data[:4]] or len(data) != _HEADER.size + 8 * (
        m * n_state + L.N_ENG
    ):
        return data
    body = np.frombuffer(data, dtype=np.float64, offset=_HEADER.size)
    rows = np.zeros((m, L.N_STATE))
    rows[:, :n_state] = body[: m * n_state].reshape(m, n_state)
    return _HEADER.pack(_MAGIC, m, L.N_STATE) + rows.tobytes() + body[m * n_state :].tobytes()


class Engine:
    """Monitors one individual over several metrics (e.g. ``("resting_hr", "activity")``).

    Warm-up: a metric is "still learning" until ``warmup_s`` (1 day) has passed since its first
    valid sample and it has ``warmup_n`` (168) valid samples; no events and combined score 0 until
    at least one metric is warm.
    """

    def __init__(
        self,
        metrics: Sequence[str],
        config: EngineConfig | None = None,
        directions: Mapping[str, int] | None = None,
    ) -> None:
        if isinstance(metrics, str) or len(metrics) == 0:
            raise EngineInputError(
                f"metrics must be a non-empty sequence of names, found {metrics!r}; "
                "pass e.g. ('resting_hr', 'activity')"
            )
        self.metrics: tuple[str, ...] = tuple(str(m) for m in metrics)
        if len(set(self.metrics)) != len(self.metrics):
            raise EngineInputError(f"metric names must be unique, found {self.metrics!r}")
        self.config = config if config is not None else EngineConfig()
        m = len(self.metrics)
        # one workspace holds config, state and the one-row buffers, so process_one is one call
        self._work = np.zeros(L.work_size(m), dtype=np.float64)
        self._work[0] = m
        w = L.work_views(self._work, m)
        self._cfg, self._st, self._eng = w["cfg"], w["st"], w["eng"]
        self._cfg[:] = self.config.vector()
        self._st[:], self._eng[:] = L.new_state(m)
        self._ts1, self._v1row = w["ts"], w["vals"][0]
        self._out1, self._rows1 = w["out"], w["rows"]
        self._flags1 = np.zeros(1, dtype=np.uint8)
        self._m = m
        # the compiled kernels: ahead of time when built, else the JIT (device.kernels.loader)
        self._k: Kernels = kernels()
        self._step = self._k.step
        o1, r1 = self._out1, self._rows1
        self._shared = EngineOutput(o1[_O_SCORE], o1[_O_PERS], r1[_R_COMB], self._flags1, [],
                                    o1[_O_BASE], o1[_O_SD], o1[_O_LEVEL], o1[L.O_NOVEL])  # fmt: skip
        directions = dict(directions or {})
        unknown = set(directions) - set(self.metrics)
        if unknown:
            raise EngineInputError(
                f"directions name unknown metrics {sorted(unknown)}; expected a subset of "
                f"{self.metrics}"
            )
        for name, d in directions.items():
            if d not in (-1, 0, 1):
                raise EngineInputError(f"direction of {name!r} must be -1, 0 or +1, found {d!r}")
            self._st[self.metrics.index(name), L.M_DIR] = float(d)

    # ------------------------------------------------------------------ scoring
    def process(self, ts: np.ndarray, values: np.ndarray) -> EngineOutput:
        """Batch: ``ts`` float64 (n,), ``values`` float64 (n, n_metrics), NaN = missing.

        Rows are seen in order, each only after the previous ones (causal), so any chunking of a
        stream gives identical output.
        """
        try:
            ts_a = np.ascontiguousarray(ts, dtype=np.float64)
            v_a = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise EngineInputError(
                f"ts and values must be numeric arrays (float64, NaN for missing): {exc}"
            ) from exc
        m = len(self.metrics)
        if v_a.ndim == 1 and m == 1:
            v_a = v_a.reshape(-1, 1)
        if ts_a.ndim != 1 or v_a.ndim != 2 or v_a.shape != (ts_a.shape[0], m):
            raise EngineInputError(
                f"expected ts of shape (n,) and values of shape (n, {m}) for metrics "
                f"{self.metrics}, found {ts_a.shape} and {v_a.shape}; reshape the input"
            )
        v_a = np.ascontiguousarray(v_a)
        n = ts_a.shape[0]
        out = np.empty((L.N_OUT, n, m), dtype=np.float64)
        rows = np.empty((L.N_ROW, n), dtype=np.float64)
        flags = np.empty(n, dtype=np.uint8)
        self._k.process(self._cfg, self._st, self._eng, ts_a, v_a, out, rows, flags)
        return self._output(ts_a, out, rows, flags)

    def process_one(
        self, ts: float, values: Sequence[float], *, reuse: bool = False
    ) -> EngineOutput:
        """One row; the same result as :meth:`process` on that row (preallocated buffers).

        ``reuse=True`` skips the copies: the returned output's arrays are the engine's own
        buffers, overwritten by the next call (copy what you keep). Events are always fresh.
        """
        if len(values) != self._m:
            raise EngineInputError(
                f"expected {self._m} values for metrics {self.metrics}, found {len(values)}"
            )
        self._ts1[0] = ts
        try:
            self._v1row[:] = values
        except (TypeError, ValueError):  # None or non-numbers: missing (flag 1), never a crash
            self._v1row[:] = [_as_float(v) for v in values]
        self._step(self._work, self._flags1)
        if reuse:
            shared = self._shared
            shared.events = (
                self._output(self._ts1, self._out1, self._rows1, self._flags1).events
                if self._rows1[_R_EVENT, 0] > 0.0
                else []
            )
            return shared
        out, rows, flags = self._out1.copy(), self._rows1.copy(), self._flags1.copy()
        if rows[_R_EVENT, 0] > 0.0:
            return self._output(self._ts1.copy(), out, rows, flags)
        return EngineOutput(out[_O_SCORE], out[_O_PERS], rows[_R_COMB], flags, [],
                            out[_O_BASE], out[_O_SD], out[_O_LEVEL], out[L.O_NOVEL])  # fmt: skip

    def _output(
        self, ts: np.ndarray, out: np.ndarray, rows: np.ndarray, flags: np.ndarray
    ) -> EngineOutput:
        events = [
            self._event(float(ts[i]), out[:, i, :], float(rows[L.R_ESCORE, i]))
            for i in np.flatnonzero(rows[L.R_EVENT] > 0.0)
        ]
        return EngineOutput(
            scores=out[L.O_SCORE],
            persistence=out[L.O_PERS],
            combined=rows[L.R_COMB],
            flags=flags,
            events=events,
            baseline=out[L.O_BASE],
            spread=out[L.O_SD],
            level=out[L.O_LEVEL],
            novelty=out[L.O_NOVEL],
        )

    def _event(self, ts: float, o: np.ndarray, score: float) -> DeviationEvent:
        """Build an event from one row's outputs ``o`` (N_OUT, m)."""
        idx = np.flatnonzero(o[L.O_CONTRIB] > 0.0)
        cfg = self.config
        severity = (
            "critical"
            if score >= cfg.critical_score
            else ("warning" if score >= cfg.warning_score else "info")
        )
        ev = DeviationEvent(
            start_ts=float(min(o[L.O_START, idx])),
            ts=ts,
            metrics=tuple(self.metrics[j] for j in idx),
            directions=tuple(int(o[L.O_DIR, j]) for j in idx),
            score=score,
            severity=severity,
            kind="sustained",
            baseline=tuple(float(o[L.O_BASE, j]) for j in idx),
            observed=tuple(float(o[L.O_LEVEL, j]) for j in idx),
        )
        logger.info("detect.event", extra={"metrics": ev.metrics, "ts": ts, "score": score})
        return ev

    # ------------------------------------------------------------------ state
    @property
    def kernel_path(self) -> str:
        """Which kernels score: ``"aot"`` (compiled ahead of time), ``"jit"`` or ``"python"``."""
        return self._k.path

    @property
    def warming_up(self) -> bool:
        """True while no metric has finished warm-up ("still learning")."""
        return not bool(np.any(self._st[:, L.M_WARM] != 0.0))

    def state(self) -> bytes:
        """Compact state: header + metric state (m x 190 float64) + engine state (12 float64)."""
        m = len(self.metrics)
        return _HEADER.pack(_MAGIC, m, L.N_STATE) + self._st.tobytes() + self._eng.tobytes()

    @classmethod
    def from_state(
        cls,
        data: bytes,
        metrics: Sequence[str],
        config: EngineConfig | None = None,
        directions: Mapping[str, int] | None = None,
        saved_metrics: Sequence[str] | None = None,
    ) -> Engine:
        """Rebuild an engine from :meth:`state`; ``directions``, when given, override the saved
        ones for the metrics they name (the saved widen factors are kept).

        ``saved_metrics`` names the metrics the state was saved with, when they may differ from
        ``metrics`` (an agent upgrade that adds or drops a metric): metrics in both keep what they
        learnt, new ones start learning, dropped ones are forgotten.
        """
        if saved_metrics is not None and tuple(saved_metrics) != tuple(metrics):
            old = cls.from_state(data, saved_metrics, config)
            eng = cls(metrics, config)
            for i, name in enumerate(eng.metrics):
                if name in old.metrics:
                    eng._st[i] = old._st[old.metrics.index(name)]
            eng._eng[:] = old._eng
            for name, d in (directions or {}).items():
                eng._st[eng.metrics.index(name), L.M_DIR] = float(d)
            return eng
        data = _upgrade_state(bytes(data))
        eng = cls(metrics, config, directions)
        m = len(eng.metrics)
        expected = _HEADER.size + 8 * (m * L.N_STATE + L.N_ENG)
        if len(data) != expected or data[:4] != _MAGIC:
            raise EngineStateError(
                f"expected {expected} bytes starting with {_MAGIC!r} for {m} metrics, found "
                f"{len(data)} bytes starting with {bytes(data[:4])!r}; pass bytes from "
                "Engine.state() saved with the same metrics"
            )
        _, m_saved, n_state = _HEADER.unpack_from(data)
        if m_saved != m or n_state != L.N_STATE:
            raise EngineStateError(
                f"state holds {m_saved} metrics x {n_state} floats, expected {m} x {L.N_STATE}"
            )
        body = np.frombuffer(data, dtype=np.float64, offset=_HEADER.size)
        eng._st[:] = body[: m * L.N_STATE].reshape(m, L.N_STATE)
        eng._eng[:] = body[m * L.N_STATE :]
        for name, d in (directions or {}).items():
            eng._st[eng.metrics.index(name), L.M_DIR] = float(d)
        return eng

    # ------------------------------------------------------------------ personalisation
    def _index(self, metric: str) -> int:
        if metric not in self.metrics:
            raise EngineInputError(f"unknown metric {metric!r}; expected one of {self.metrics}")
        return self.metrics.index(metric)

    def accept_new_normal(self, metric: str | None = None) -> None:
        """Owner said "normal for her": shift the baseline to the recent level, clear evidence."""
        idx = range(len(self.metrics)) if metric is None else [self._index(metric)]
        t = self._eng[L.E_TPREV]
        for j in idx:
            s = self._st[j]
            if s[L.M_NVALID] == 0.0:
                continue
            h = int((t % 86400.0) // 3600.0)
            base, sd = self._k.baseline(self._cfg, s, h, t)
            if not np.isfinite(base):
                continue
            delta = s[L.M_LEVEL] - base
            s[L.BIN_MEAN : L.N_BINS * 4 : 4] += delta
            s[L.G_MEAN] += delta
            s[L.M_E] = 0.0
            s[L.M_SPOS] = s[L.M_SNEG] = 0.0
            s[L.M_PROT] = np.nan
            logger.info(
                "detect.accept_new_normal", extra={"metric": self.metrics[j], "shift": delta}
            )
        self._eng[L.E_ARMED] = 1.0

    def widen(self, metric: str, factor: float) -> None:
        """Personalisation: multiply ``metric``'s thresholds (spike z and CUSUM) by ``factor``."""
        if not np.isfinite(factor) or factor <= 0:
            raise EngineInputError(f"widen factor must be a finite number > 0, found {factor!r}")
        self._st[self._index(metric), L.M_SCALE] *= factor
