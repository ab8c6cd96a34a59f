"""Plain-Python twins of the Numba kernels in :mod:`device.kernels` (slow and obvious).

Each function mirrors one kernel's definition without Numba, arrays or index constants, so a
test can compare the two on any input (``tests/test_kernels_*.py``).
"""

from __future__ import annotations

import math

import numpy as np

from device.detect.engine import EngineConfig

# ---------------------------------------------------------------- Welford


def decay(w: float, m2: float, dt: float, memory: float) -> tuple[float, float]:
    if dt <= 0 or memory <= 0:
        return w, m2
    f = math.exp(-dt / memory)
    return w * f, m2 * f


def welford_update(w: float, mean: float, m2: float, x: float, u: float) -> tuple[float, ...]:
    if u <= 0:
        return w, mean, m2
    w2 = w + u
    mean2 = mean + u * (x - mean) / w2
    return w2, mean2, max(0.0, m2 + u * (x - mean) * (x - mean2))


def welford_batch(xs: list[float], us: list[float]) -> tuple[float, float, float]:
    """Weighted mean and M2 straight from the definition (two passes)."""
    w = sum(us)
    if w <= 0:
        return 0.0, 0.0, 0.0
    mean = sum(u * x for x, u in zip(xs, us, strict=True)) / w
    return w, mean, sum(u * (x - mean) ** 2 for x, u in zip(xs, us, strict=True))


# ---------------------------------------------------------------- resting heart rate


def resting_hr(ts_hr, hr, ts_steps, steps, quiet: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Minutes whose previous ``quiet`` minutes (inclusive) all have recorded zero steps."""
    step_of: dict[int, float] = {}
    for t, s in zip(ts_steps, steps, strict=True):
        if math.isfinite(t) and math.isfinite(s):
            step_of[math.floor(t / 60.0)] = s  # last record of a minute wins
    sums: dict[int, list[float]] = {}
    for t, h in zip(ts_hr, hr, strict=True):
        if math.isfinite(t) and math.isfinite(h):
            sums.setdefault(math.floor(t / 60.0), []).append(h)
    out_t, out_v = [], []
    for m in sorted(sums):
        if all(step_of.get(m - k) == 0.0 for k in range(quiet)):
            out_t.append(m * 60.0)
            out_v.append(sum(sums[m]) / len(sums[m]))
    return np.array(out_t, dtype=np.float64), np.array(out_v, dtype=np.float64)


# ---------------------------------------------------------------- the deviation engine


class _Stat:
    def __init__(self) -> None:
        self.w = 0.0
        self.mean = 0.0
        self.m2 = 0.0
        self.t = 0.0


class _Metric:
    def __init__(self, direction: int) -> None:
        self.bins = [_Stat() for _ in range(24)]
        self.g = _Stat()
        self.tlast = 0.0
        self.e = 0.0
        self.ew = 0.0
        self.eq = 0.0
        self.sp = self.sn = 0.0
        self.rsp = self.rsn = 0.0
        self.first = 0.0
        self.n = 0
        self.dir = direction
        self.prot = math.nan
        self.level = 0.0
        self.zs = 0.0
        self.warm = False
        self.envp = self.envn = 0.0
        self.denv = [0.0] * 24  # per hour: largest recent big |z| (as of that hour bin's time)
        self.dtime = [0.0] * 24  # when it was recorded
        self.dconf = [0.0] * 24  # a big |z| seen on two different days near this hour


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


class NaiveEngine:
    """Row-by-row re-statement of ``device.kernels.deviation._process_kernel``."""

    def __init__(self, n_metrics: int, cfg: EngineConfig | None = None, dirs=None) -> None:
        self.c = cfg or EngineConfig()
        self.ms = [_Metric(int(d)) for d in (dirs or [0] * n_metrics)]
        self.tprev = 0.0
        self.nrows = 0
        self.lastev = -math.inf
        self.armed = True
        self.short = 0.0
        self.lw = self.lmean = self.lm2 = 0.0
        self.lastcomb = 0.0
        self.peak = 0.0
        self.step_typ = 0.0

    def _baseline(self, s: _Metric, h: int, t: float) -> tuple[float, float]:
        c = self.c
        wg, m2g = decay(s.g.w, s.g.m2, t - s.g.t, c.memory_s)
        floor = c.sd_floor_rel * abs(s.g.mean) + c.sd_floor_abs
        if wg <= 1e-12:
            return math.nan, floor
        b = s.bins[h]
        wb, m2b = decay(b.w, b.m2, t - b.t, c.memory_s)
        if wb > 1e-12:
            a = wb / (wb + c.bin_prior)
            base = a * b.mean + (1 - a) * s.g.mean
            var = a * m2b / wb + (1 - a) * m2g / wg
        else:
            base, var = s.g.mean, m2g / wg
        if m2g / wg > 0:
            floor = max(floor, c.bin_sd_floor * math.sqrt(m2g / wg))
        return base, max(math.sqrt(var) if var > 0 else 0.0, floor)

    def step(self, t: float, xs) -> dict:
        """Score one row: dict with per-metric lists and row values (like the kernel outputs)."""
        c = self.c
        flags, ok, dt = 0, True, c.weight_unit_s
        if not math.isfinite(t):
            flags, ok = flags | 2, False
        elif self.nrows > 0:
            dt = t - self.tprev
            if abs(dt) > c.clock_jump_s:
                flags, dt = flags | 16 | 4, c.weight_cap_s
            elif dt <= 0:
                flags, ok = flags | 2, False
            elif dt > c.gap_s:
                flags |= 4
        dt = min(dt, c.weight_cap_s)
        u_time, dt_h = dt / c.weight_unit_s, dt / 3600.0
        alpha = 1 - math.exp(-dt / c.smooth_s)
        h = int((t % 86400.0) // 3600.0) if math.isfinite(t) else 0
        if ok:
            self.tprev, self.nrows = t, self.nrows + 1
        res = {k: [] for k in ("score", "pers", "base", "sd", "level", "start", "dir", "zs")}
        raw, raw_l, any_warm, warm = 0.0, 0.0, False, []
        for s, x in zip(self.ms, xs, strict=True):
            ev = ev_l = 0.0
            finite = math.isfinite(x) and abs(x) <= c.max_abs_value
            if not finite:
                flags |= 1
            h_eff = c.cusum_h * 1.0
            base, sd = self._baseline(s, h, t if ok else self.tprev)
            if not math.isfinite(base):
                base = x if finite else 0.0
            score = 0.0
            if ok and finite:
                z = (x - base) / sd
                if s.n == 0:
                    s.first, s.level = t, x
                else:
                    fenv = math.exp(-(t - s.tlast) / c.envelope_s)
                    s.envp, s.envn = s.envp * fenv, s.envn * fenv
                s.e += alpha * (_clip(z, -c.z_clip, c.z_clip) - s.e)
                ew, eq = decay(s.ew, s.eq, t - s.tlast, c.memory_s)
                pw = c.e_prior_weight
                rms = max(math.sqrt((eq + pw * c.e_prior_rms**2) / (ew + pw)), c.e_rms_floor)
                s.zs = s.e / rms
                if not s.warm and s.n + 1 >= c.warmup_n and t - s.first >= c.warmup_s:
                    s.warm = True
                if s.warm:
                    zsc = _clip(s.zs, -c.zs_clip, c.zs_clip)
                    sp = max(0.0, s.sp + (zsc - c.cusum_k) * dt_h)
                    sn = max(0.0, s.sn + (-zsc - c.cusum_k) * dt_h)
                    if s.sp == 0 and sp > 0:
                        s.rsp = t
                    if s.sn == 0 and sn > 0:
                        s.rsn = t
                    s.sp, s.sn = min(sp, h_eff * c.cusum_cap), min(sn, h_eff * c.cusum_cap)
                    zd = abs(z) if s.dir == 0 else (z if s.dir > 0 else -z)
                    zcl = _clip(z, -c.surprise_z_clip, c.surprise_z_clip)
                    env = s.envp if z >= 0 else s.envn
                    if zd > 0:
                        ev = min(max(0.0, zd - c.envelope_factor * env), c.surprise_z_clip)
                    ev_l = ev
                    if c.daily_env_s > 0:
                        ds = c.daily_env_s
                        fh = math.exp(-(t - s.bins[h].t) / ds)
                        s.denv[h] *= fh
                        s.dconf[h] *= fh
                        denv = near = 0.0
                        for dh in (-1, 0, 1):
                            k = (h + dh) % 24
                            fk = 1.0 if dh == 0 else math.exp(-(t - s.bins[k].t) / ds)
                            denv = max(denv, s.dconf[k] * fk)
                            if t - s.dtime[k] >= 43200.0:
                                near = max(near, s.denv[k] * fk)
                        denv *= c.daily_env_factor
                        if zd > 0 and denv > c.envelope_factor * env:
                            ev = min(max(0.0, zd - denv), c.surprise_z_clip)
                        if abs(z) >= c.daily_env_z:
                            az = abs(zcl)
                            if near > 0:
                                s.dconf[h] = max(s.dconf[h], min(az, near))
                            if az > s.denv[h] or t - s.dtime[h] >= 43200.0:
                                s.denv[h], s.dtime[h] = max(s.denv[h], az), t
                    s.envp, s.envn = max(s.envp, zcl), max(s.envn, -zcl)
                    if zd - c.spike_z0 > 0:
                        score = 1 - math.exp(-(zd - c.spike_z0) / c.spike_scale)
                protected = False
                if max(s.sp, s.sn) / h_eff >= c.protect_p:
                    if not math.isfinite(s.prot):
                        s.prot = t
                    protected = t - s.prot < c.protect_max_s
                else:
                    s.prot = math.nan
                u = u_time * (c.protect_weight if protected else 1.0)
                floor = c.sd_floor_rel * abs(s.g.mean) + c.sd_floor_abs
                for st, is_bin in ((s.bins[h], True), (s.g, False)):
                    w, m2 = decay(st.w, st.m2, t - st.t, c.memory_s)
                    xw = x
                    if is_bin and w >= c.bin_prior and sd > floor:
                        xw = _clip(x, base - c.huber_c * sd, base + c.huber_c * sd)
                    if not is_bin and w >= c.bin_prior:
                        sdg = math.sqrt(m2 / w) if m2 > 0 else 0.0
                        if sdg > floor:
                            xw = _clip(x, st.mean - c.huber_c * sdg, st.mean + c.huber_c * sdg)
                    st.w, st.mean, st.m2 = welford_update(w, st.mean, m2, xw, u)
                    st.t = t
                ec = _clip(s.e, -c.huber_c * rms, c.huber_c * rms)
                s.ew, s.eq = ew + u, eq + u * ec * ec
                s.level += alpha * (x - s.level)
                s.n += 1
                s.tlast = t
            pp, pn = s.sp / h_eff, s.sn / h_eff
            if s.dir > 0 or (s.dir == 0 and pp >= pn):
                p, start, sign = pp, s.rsp, 1.0
            else:
                p, start, sign = pn, s.rsn, -1.0
            p = min(p, 1.0)
            for k, v in (("score", score), ("pers", p), ("base", base), ("sd", sd),
                         ("level", s.level if s.n > 0 else base), ("start", start),
                         ("dir", sign), ("zs", s.zs)):  # fmt: skip
                res[k].append(v)
            warm.append(s.warm)
            if s.warm:
                any_warm = True
                zsd = abs(s.zs) if s.dir == 0 else (s.zs if s.dir > 0 else -s.zs)
                if zsd > 0:
                    ev += min(zsd, c.surprise_z_clip)
                    ev_l += min(zsd, c.surprise_z_clip)
                raw, raw_l = max(raw, ev), max(raw_l, ev_l)
        if not any_warm:
            flags |= 8
        res["flags"], res["event"], res["contrib"] = flags, False, [False] * len(self.ms)
        if not ok:
            res["comb"] = self.lastcomb
            return res
        contrib = [wm and p >= c.contrib_p for wm, p in zip(warm, res["pers"], strict=True)]
        total = sum(p for cb, p in zip(contrib, res["pers"], strict=True) if cb)
        if total >= c.event_sum:
            if self.armed and t - self.lastev >= c.cooldown_s:
                self.armed, self.lastev = False, t
                res["event"], res["contrib"] = True, contrib
        else:
            self.armed = True
        if self.nrows > 1:
            if self.step_typ <= 0:
                self.step_typ = dt
            elif dt > self.step_typ:
                self.step_typ = min(self.step_typ * 1.05, dt)
            elif dt < self.step_typ:
                self.step_typ = max(self.step_typ / 1.05, dt)
        dts, cap = dt, c.surprise_step_cap * self.step_typ
        if cap > 0 and dts > cap:
            dts = cap
        self.short += (1 - math.exp(-dts / c.surprise_short_s)) * (raw - self.short)
        lw, lm2 = decay(self.lw, self.lm2, dt, c.surprise_long_s)
        comb = 0.0
        if any_warm and lw > 0:
            zl = (self.short - self.lmean) / max(math.sqrt(lm2 / lw), c.surprise_floor)
            if zl > 0:
                comb = 1 - math.exp(-zl / c.surprise_scale)
        peak = self.peak * math.exp(-dt / c.refractory_s)
        damp = comb <= peak or (peak >= c.refractory_level and comb <= peak + c.refractory_margin)
        if comb > peak:
            peak = comb
        if damp:
            comb *= c.refractory_factor
        self.peak = peak
        if any_warm:
            lw, self.lmean, lm2 = welford_update(lw, self.lmean, lm2, raw_l, u_time)
        self.lw, self.lm2, self.lastcomb = lw, lm2, comb
        res["comb"] = comb
        return res
