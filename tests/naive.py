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


# ---------------------------------------------------------------- the deviation kernel's helpers
# One twin per @njit helper of device.kernels.{persistence,evidence,surprise,decide}, same
# arguments, written from the definitions.


def clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def time_step(t, tprev, nrows, unit_s, jump_s, cap_s, gap_s) -> tuple[bool, int, float]:
    if not math.isfinite(t):
        return False, 2, min(unit_s, cap_s)
    if nrows == 0:
        return True, 0, min(unit_s, cap_s)
    dt = t - tprev
    if abs(dt) > jump_s:
        return True, 16 | 4, cap_s
    if dt <= 0:
        return False, 2, min(dt, cap_s)
    return True, (4 if dt > gap_s else 0), min(dt, cap_s)


def hour(t: float) -> int:
    return int((t % 86400.0) // 3600.0) if math.isfinite(t) else 0


def smooth(e, ew, eq, since, z, alpha, z_clip, memory, prior_w, prior_rms, rms_floor):
    e = e + alpha * (clip(z, -z_clip, z_clip) - e)
    ew, eq = decay(ew, eq, since, memory)
    rms = max(math.sqrt((eq + prior_w * prior_rms**2) / (ew + prior_w)), rms_floor)
    return e, ew, eq, rms


def learn_smooth(e, ew, eq, rms, u, huber_c):
    ec = clip(e, -huber_c * rms, huber_c * rms)
    return ew + u, eq + u * ec * ec


def warm_up(warm, nvalid, first, t, warmup_n, warmup_s) -> bool:
    return bool(warm) or (nvalid + 1 >= warmup_n and t - first >= warmup_s)


def cusum(sp, sn, rsp, rsn, zs, dt_h, t, k, zs_clip, cap):
    zsc = clip(zs, -zs_clip, zs_clip)
    p = max(0.0, sp + (zsc - k) * dt_h)
    n = max(0.0, sn + (-zsc - k) * dt_h)
    rsp = t if (sp == 0 and p > 0) else rsp
    rsn = t if (sn == 0 and n > 0) else rsn
    return min(p, cap), min(n, cap), rsp, rsn


def protect_weight(pmax, since, t, protect_p, protect_max_s, protect_weight):
    if pmax < protect_p:
        return 1.0, math.nan
    since = since if math.isfinite(since) else t
    return (protect_weight if t - since < protect_max_s else 1.0), since


def persistence(sp, sn, rsp, rsn, d, h):
    if d > 0 or (d == 0 and sp / h >= sn / h):
        return min(sp / h, 1.0), rsp, 1.0
    return min(sn / h, 1.0), rsn, -1.0


def directed(v: float, d: float) -> float:
    return abs(v) if d == 0 else (v if d > 0 else -v)


def envelope_evidence(z, zd, envp, envn, factor, clip_):
    env = envp if z >= 0 else envn
    return (min(max(0.0, zd - factor * env), clip_) if zd > 0 else 0.0), env


def envelope_record(z, envp, envn, clip_):
    zcl = clip(z, -clip_, clip_)
    return max(envp, zcl), max(envn, -zcl)


def daily_envelope(denv, dtime, dconf, bin_t, hh, t, z, zd, env, ev, memory, big_z, factor,
                   env_factor, clip_):  # fmt: skip
    """Twin of ``_daily_envelope`` on lists (24 each; ``bin_t`` = each hour bin's time),
    updated in place."""
    if memory <= 0:
        return ev
    fh = math.exp(-(t - bin_t[hh]) / memory)
    denv[hh] *= fh
    dconf[hh] *= fh
    level = near = 0.0
    for dh in (-1, 0, 1):
        k = (hh + dh) % 24
        fk = 1.0 if dh == 0 else math.exp(-(t - bin_t[k]) / memory)
        level = max(level, dconf[k] * fk)
        if t - dtime[k] >= 43200.0:
            near = max(near, denv[k] * fk)
    level *= factor
    if zd > 0 and level > env_factor * env:
        ev = min(max(0.0, zd - level), clip_)
    if abs(z) >= big_z:
        az = abs(clip(z, -clip_, clip_))
        if near > 0:
            dconf[hh] = max(dconf[hh], min(az, near))
        if az > denv[hh] or t - dtime[hh] >= 43200.0:
            denv[hh], dtime[hh] = max(denv[hh], az), t
    return ev


def spike_score(zd, scale, z0, spike_scale):
    zz = zd / scale - z0
    return 1 - math.exp(-zz / spike_scale) if zz > 0 else 0.0


def sustained_evidence(zs, d, scale, ev, ev_l, clip_):
    zsd = directed(zs, d)
    if zsd > 0:
        ev, ev_l = ev + min(zsd, clip_), ev_l + min(zsd, clip_)
    return ev / scale, ev_l / scale


def typical_step(step, dt):
    if step <= 0:
        return dt
    return min(step * 1.05, dt) if dt > step else (max(step / 1.05, dt) if dt < step else step)


def surprise(short, lmean, lw, lm2, raw, dts, any_warm, short_s, floor, scale):
    short = short + (1 - math.exp(-dts / short_s)) * (raw - short)
    if not (any_warm and lw > 0):
        return 0.0, short
    zl = (short - lmean) / max(math.sqrt(lm2 / lw), floor)
    return (1 - math.exp(-zl / scale) if zl > 0 else 0.0), short


def refractory(comb, peak, dt, refractory_s, level, margin, factor):
    peak = peak * math.exp(-dt / refractory_s)
    damp = comb <= peak or (peak >= level and comb <= peak + margin)
    return (comb * factor if damp else comb), max(peak, comb)


def decide(armed, lastev, t, warm, pers, zs, contrib_p, event_sum, cooldown_s, zs_clip):
    """Twin of ``_decide`` for an accepted row: ``(event, score, contrib, armed, lastev)``."""
    contrib = [w and p >= contrib_p for w, p in zip(warm, pers, strict=True)]
    if sum(p for c, p in zip(contrib, pers, strict=True) if c) < event_sum:
        return False, 0.0, [False] * len(pers), True, lastev
    if not (armed and t - lastev >= cooldown_s):
        return False, 0.0, [False] * len(pers), armed, lastev
    keep = 1.0
    for c, p, z in zip(contrib, pers, zs, strict=True):
        if c:
            keep *= 1 - 0.6 * p * min(1.0, 2 * abs(z) / zs_clip)
    return True, 1 - keep, contrib, False, t


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
        self.nov = NaiveNovelty()  # the pattern-novelty channel


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

    def _learn(self, s: _Metric, h: int, t: float, x: float, base: float, sd: float, u: float):
        c = self.c
        floor = c.sd_floor_rel * abs(s.g.mean) + c.sd_floor_abs
        for st, is_bin in ((s.bins[h], True), (s.g, False)):
            w, m2 = decay(st.w, st.m2, t - st.t, c.memory_s)
            xw = x
            if is_bin and w >= c.bin_prior and sd > floor:
                xw = clip(x, base - c.huber_c * sd, base + c.huber_c * sd)
            if not is_bin and w >= c.bin_prior:
                sdg = math.sqrt(m2 / w) if m2 > 0 else 0.0
                if sdg > floor:
                    xw = clip(x, st.mean - c.huber_c * sdg, st.mean + c.huber_c * sdg)
            st.w, st.mean, st.m2 = welford_update(w, st.mean, m2, xw, u)
            st.t = t

    def _metric(self, s: _Metric, ok: bool, t: float, tq: float, x: float, h: int, dt: float):
        """One metric of one row: (score, ev, ev_l) and the metric's outputs."""
        c = self.c
        finite = math.isfinite(x) and abs(x) <= c.max_abs_value
        h_eff = c.cusum_h * 1.0
        base, sd = self._baseline(s, h, tq)
        if not math.isfinite(base):
            base = x if finite else 0.0
        score = ev = ev_l = 0.0
        novel = math.nan
        if ok and finite:
            z = (x - base) / sd
            novel = s.nov.add(t, z, c.novelty_seg_s, c.novelty_vigilance, c.novelty_rate,
                              c.novelty_memory_s, c.novelty_min_segments)  # fmt: skip
            if s.n == 0:
                s.first, s.level = t, x
            else:
                fenv = math.exp(-(t - s.tlast) / c.envelope_s)
                s.envp, s.envn = s.envp * fenv, s.envn * fenv
            alpha = 1 - math.exp(-dt / c.smooth_s)
            s.e, ew, eq, rms = smooth(s.e, s.ew, s.eq, t - s.tlast, z, alpha, c.z_clip, c.memory_s,
                                      c.e_prior_weight, c.e_prior_rms, c.e_rms_floor)  # fmt: skip
            s.zs = s.e / rms
            s.warm = warm_up(s.warm, s.n, s.first, t, c.warmup_n, c.warmup_s)
            if s.warm:
                s.sp, s.sn, s.rsp, s.rsn = cusum(s.sp, s.sn, s.rsp, s.rsn, s.zs, dt / 3600.0, t,
                                                 c.cusum_k, c.zs_clip, h_eff * c.cusum_cap)  # fmt: skip
                zd = directed(z, s.dir)
                ev, env = envelope_evidence(z, zd, s.envp, s.envn, c.envelope_factor,
                                            c.surprise_z_clip)  # fmt: skip
                ev_l = ev
                ev = daily_envelope(s.denv, s.dtime, s.dconf, [b.t for b in s.bins], h, t, z, zd,
                                    env, ev, c.daily_env_s, c.daily_env_z, c.daily_env_factor,
                                    c.envelope_factor, c.surprise_z_clip)  # fmt: skip
                s.envp, s.envn = envelope_record(z, s.envp, s.envn, c.surprise_z_clip)
                score = spike_score(zd, 1.0, c.spike_z0, c.spike_scale)
            w, s.prot = protect_weight(max(s.sp, s.sn) / h_eff, s.prot, t, c.protect_p,
                                       c.protect_max_s, c.protect_weight)  # fmt: skip
            u = dt / c.weight_unit_s * w
            self._learn(s, h, t, x, base, sd, u)
            s.ew, s.eq = learn_smooth(s.e, ew, eq, rms, u, c.huber_c)
            s.level += alpha * (x - s.level)
            s.n += 1
            s.tlast = t
        p, start, sign = persistence(s.sp, s.sn, s.rsp, s.rsn, s.dir, h_eff)
        if s.warm:
            ev, ev_l = sustained_evidence(s.zs, s.dir, 1.0, ev, ev_l, c.surprise_z_clip)
        outs = {"score": score, "pers": p, "base": base, "sd": sd,
                "level": s.level if s.n > 0 else base, "start": start, "dir": sign, "zs": s.zs,
                "novel": novel if math.isfinite(novel) else 0.0}  # fmt: skip
        return finite, ev, ev_l, outs

    def step(self, t: float, xs) -> dict:
        """Score one row: dict with per-metric lists and row values (like the kernel outputs)."""
        c = self.c
        ok, flags, dt = time_step(t, self.tprev, self.nrows, c.weight_unit_s, c.clock_jump_s,
                                  c.weight_cap_s, c.gap_s)  # fmt: skip
        h = hour(t)
        if ok:
            self.tprev, self.nrows = t, self.nrows + 1
        tq = t if ok else self.tprev
        res = {k: [] for k in ("score", "pers", "base", "sd", "level", "start", "dir", "zs", "novel")}
        raw, raw_l, warm, novel = 0.0, 0.0, [], 0.0
        for s, x in zip(self.ms, xs, strict=True):
            finite, ev, ev_l, outs = self._metric(s, ok, t, tq, x, h, dt)
            flags |= 0 if finite else 1
            for k, v in outs.items():
                res[k].append(v)
            warm.append(s.warm)
            if s.warm:
                raw, raw_l = max(raw, ev), max(raw_l, ev_l)
                novel = max(novel, outs["novel"])
        any_warm = any(warm)
        flags |= 0 if any_warm else 8
        res["flags"], res["event"], res["escore"] = flags, False, 0.0
        res["contrib"] = [False] * len(self.ms)
        if not ok:
            res["comb"] = self.lastcomb
            return res
        if self.nrows > 1:
            self.step_typ = typical_step(self.step_typ, dt)
        dts, cap = dt, c.surprise_step_cap * self.step_typ
        if cap > 0 and dts > cap:
            dts = cap
        lw, lm2 = decay(self.lw, self.lm2, dt, c.surprise_long_s)
        comb, self.short = surprise(self.short, self.lmean, lw, lm2, raw, dts, any_warm,
                                    c.surprise_short_s, c.surprise_floor, c.surprise_scale)  # fmt: skip
        if novel > 0:  # the pattern channel, calibrated the same way: the more surprising wins
            comb = max(comb, 1 - math.exp(-novel / c.surprise_scale))
        comb, self.peak = refractory(comb, self.peak, dt, c.refractory_s, c.refractory_level,
                                     c.refractory_margin, c.refractory_factor)  # fmt: skip
        if any_warm:
            lw, self.lmean, lm2 = welford_update(lw, self.lmean, lm2, raw_l, dt / c.weight_unit_s)
        self.lw, self.lm2, self.lastcomb = lw, lm2, comb
        res["comb"] = comb
        ev, score, contrib, self.armed, self.lastev = decide(
            self.armed, self.lastev, t, warm, res["pers"], res["zs"], c.contrib_p, c.event_sum,
            c.cooldown_s, c.zs_clip)  # fmt: skip
        res["event"], res["escore"], res["contrib"] = ev, score, contrib
        return res


# ---------------------------------------------------------------- the pattern-novelty channel
NV_CATS, NV_WINDOW, NV_Z_CLIP, NV_SD_FLOOR = 16, 8, 4.0, 0.02


class NaiveNovelty:
    """Twin of ``device.kernels.novelty`` for one metric, with lists and plain names."""

    def __init__(self) -> None:
        self.protos = [[0.0] * NV_WINDOW for _ in range(NV_CATS)]
        self.weight = [0.0] * NV_CATS
        self.used = [0.0] * NV_CATS
        self.window: list[float] = []  # segment shapes in time order (at most NV_WINDOW)
        self.n_segments = 0
        self.seg_sum = self.seg_n = self.seg_start = 0.0
        self.nw = self.nmean = self.nm2 = 0.0

    def _close(self, t: float, vigilance: float, rate: float, memory: float) -> float:
        m = clip(self.seg_sum / self.seg_n, -NV_Z_CLIP, NV_Z_CLIP)
        self.window = (self.window + [(m + NV_Z_CLIP) / (2 * NV_Z_CLIP)])[-NV_WINDOW:]
        self.n_segments += 1
        self.seg_sum = self.seg_n = 0.0
        if self.n_segments < NV_WINDOW:
            return math.nan
        sims, weights = [], []
        for c in range(NV_CATS):
            weights.append(self.weight[c] * math.exp(-(t - self.used[c]) / memory))
            if self.weight[c] > 0:
                dist = sum(abs(a - b) for a, b in zip(self.window, self.protos[c], strict=True))
                sims.append((1 - dist / NV_WINDOW, c))
        best_sim, best = max(sims, key=lambda x: x[0]) if sims else (-1.0, -1)
        # the first of equal similarities wins, as in the kernel's strict '>'
        if sims:
            best = next(c for sim, c in sims if sim == best_sim)
        weakest = min(range(NV_CATS), key=lambda c: (weights[c], c))
        if best >= 0 and best_sim >= vigilance:
            self.protos[best] = [p + rate * (w - p) for p, w in zip(self.protos[best], self.window,
                                                                     strict=True)]  # fmt: skip
            self.weight[best] = self.weight[best] * math.exp(-(t - self.used[best]) / memory) + 1
            self.used[best] = t
        else:
            self.protos[weakest] = list(self.window)
            self.weight[weakest], self.used[weakest] = 1.0, t
        return 1 - best_sim if best >= 0 else 0.0

    def add(self, t: float, z: float, seg_s: float, vigilance: float, rate: float, memory: float,
            min_segments: float) -> float:  # fmt: skip
        if seg_s <= 0:
            return math.nan
        out = math.nan
        if self.seg_n > 0 and t - self.seg_start >= seg_s:
            raw = self._close(t, vigilance, rate, memory)
            if math.isfinite(raw):
                nw, nm2 = decay(self.nw, self.nm2, seg_s, memory)
                if self.n_segments >= min_segments and nw > 0:
                    out = (raw - self.nmean) / max(math.sqrt(nm2 / nw), NV_SD_FLOOR)
                self.nw, self.nmean, self.nm2 = welford_update(nw, self.nmean, nm2, raw, 1.0)
        if self.seg_n == 0:
            self.seg_start = t
        self.seg_sum += clip(z, -NV_Z_CLIP, NV_Z_CLIP)
        self.seg_n += 1
        return out
