"""The deviation kernel: circadian robust baseline, instantaneous and persistence scores, events.

One call processes ``n`` rows of ``m`` metrics and mutates the packed state in place, so a stream
scored in one batch or in any chunking gives bit-identical output. Everything the kernel needs is
a float64 array; the layout constants below are shared with the thin wrapper
(:mod:`device.detect.engine`) and the plain-Python twin (``tests/naive.py``).

Per metric and row:

1. baseline ``b`` and spread ``s`` = hour-of-day bin blended with the global statistic
   (bin weight ``w_h / (w_h + bin_prior)``), both exponentially forgetting weighted Welford stats;
2. ``z = (x - b) / s``; spike score ``1 - exp(-max(0, z - spike_z0) / spike_scale)``;
3. smoothed deviation ``e`` = EWMA of ``clip(z)`` (time constant ``smooth_s``), standardised by its
   own long-run RMS into ``zs``; two-sided CUSUM on ``zs`` in z-hours -> persistence in [0, 1];
4. the baseline learns a winsorised ``x``; while persistence is high it learns with weight
   ``protect_weight`` only (contamination protection, at most ``protect_max_s``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from device.kernels import config
from device.kernels.welford import _decay_kernel, _update_kernel

# ---- config vector (order of EngineConfig fields that reach the kernel) ----
CFG_FIELDS: tuple[str, ...] = (
    "memory_s", "weight_unit_s", "weight_cap_s", "bin_prior", "huber_c", "sd_floor_rel",
    "sd_floor_abs", "z_clip", "smooth_s", "e_prior_weight", "e_prior_rms", "e_rms_floor",
    "cusum_k", "cusum_h", "cusum_cap", "zs_clip", "spike_z0", "spike_scale", "warmup_s",
    "warmup_n", "protect_p", "protect_weight", "protect_max_s", "contrib_p", "event_sum",
    "cooldown_s", "gap_s", "clock_jump_s", "surprise_short_s", "surprise_long_s",
    "surprise_floor", "surprise_scale", "bin_sd_floor", "max_abs_value", "surprise_z_clip",
    "refractory_s", "refractory_factor", "envelope_s", "envelope_factor", "refractory_level",
    "refractory_margin", "surprise_step_cap", "daily_env_s", "daily_env_z", "daily_env_factor",
)  # fmt: skip
(C_MEM, C_WUNIT, C_WCAP, C_PRIOR, C_HUBER, C_SDREL, C_SDABS, C_ZCLIP, C_SMOOTH, C_EPW, C_EPRMS,
 C_EFLOOR, C_K, C_H, C_CAP, C_ZSCLIP, C_Z0, C_SSCALE, C_WARMS, C_WARMN, C_PROTP, C_PROTW,
 C_PROTMAX, C_CONTRIB, C_EVSUM, C_COOL, C_GAP, C_JUMP, C_SSHORT, C_SLONG,
 C_SFLOOR, C_SURSCALE, C_BINSD, C_MAXABS, C_SZCLIP, C_REFR, C_REFRF, C_ENVS, C_ENVF, C_REFRL,
 C_REFRM, C_SSTEP, C_DENVS, C_DENVZ, C_DENVF) = range(len(CFG_FIELDS))  # fmt: skip
N_CFG = len(CFG_FIELDS)

# ---- per-metric state row ----
N_BINS = 24
BIN_W, BIN_MEAN, BIN_M2, BIN_T = 0, 1, 2, 3  # offsets inside one bin (4 floats per bin)
G_W, G_MEAN, G_M2, G_T = 96, 97, 98, 99  # global statistic
M_TLAST, M_E, M_EW, M_EQ = 100, 101, 102, 103  # last valid ts, smoothed z, its weight and sum e^2
M_SPOS, M_SNEG, M_RSPOS, M_RSNEG = 104, 105, 106, 107  # CUSUM sums and run start times
M_FIRST, M_NVALID, M_DIR, M_SCALE = 108, 109, 110, 111  # first ts, count, bad direction, widen
M_PROT, M_LEVEL, M_ZS, M_WARM = 112, 113, 114, 115  # protected-since, observed level, zs, warm
M_ENVP, M_ENVN = 116, 117  # envelope: decaying max of past warm z above / below the baseline
# per hour of day (24 each): largest recent big |z| (as of the hour bin's time BIN_T), when it was
# recorded, and the "daily" level: a big |z| seen on two different days at this hour (or a neighbour)
D_ENV, D_TIME, D_CONF = 118, 142, 166
N_STATE = 190

# ---- engine state ----
E_TPREV, E_NROWS, E_LASTEV, E_ARMED, E_SHORT, E_LW, E_LMEAN, E_LM2, E_LASTCOMB, E_PEAK = range(10)
E_STEP = 10  # typical time step: running median of dt (0 = not seen yet; slot 11 is spare)
STEP_RATE = 1.05  # the typical step moves by this factor per row towards dt
N_ENG = 12

# ---- outputs: per metric (N_OUT, n, m), per row (N_ROW, n) and flags (n,) uint8 ----
O_SCORE, O_PERS, O_BASE, O_SD, O_LEVEL, O_START, O_DIR, O_CONTRIB, O_ZS = range(9)
N_OUT = 9
R_COMB, R_EVENT, R_ESCORE = range(3)
N_ROW = 3

FLAG_MISSING, FLAG_ORDER, FLAG_GAP, FLAG_WARMUP, FLAG_CLOCK = 1, 2, 4, 8, 16


def new_state(n_metrics: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh ``(metric_state (m, N_STATE), engine_state (N_ENG,))`` arrays."""
    st = np.zeros((n_metrics, N_STATE), dtype=np.float64)
    st[:, M_SCALE] = 1.0
    st[:, M_PROT] = np.nan
    eng = np.zeros(N_ENG, dtype=np.float64)
    eng[E_ARMED] = 1.0
    eng[E_LASTEV] = -np.inf
    return st, eng


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else (hi if x > hi else x)


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _baseline_kernel(cfg: np.ndarray, s: np.ndarray, h: int, t: float) -> tuple[float, float]:
    """Blended (bin, global) baseline mean and spread for hour ``h`` at time ``t``."""
    mem = cfg[C_MEM]
    b = h * 4
    wg, m2g = _decay_kernel(s[G_W], s[G_M2], t - s[G_T], mem)
    meang = s[G_MEAN]
    floor = cfg[C_SDREL] * abs(meang) + cfg[C_SDABS]
    if wg <= config.EDGELOOP_EPS:
        return np.nan, floor
    varg = m2g / wg
    wb, m2b = _decay_kernel(s[b + BIN_W], s[b + BIN_M2], t - s[b + BIN_T], mem)
    if wb > config.EDGELOOP_EPS:
        a = wb / (wb + cfg[C_PRIOR])
        base = a * s[b + BIN_MEAN] + (1.0 - a) * meang
        var = a * (m2b / wb) + (1.0 - a) * varg
    else:
        base = meang
        var = varg
    sd = math.sqrt(var) if var > 0.0 else 0.0
    if varg > 0.0:
        floor = max(floor, cfg[C_BINSD] * math.sqrt(varg))
    if sd < floor:
        sd = floor
    return base, sd


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _learn_kernel(
    cfg: np.ndarray, s: np.ndarray, h: int, t: float, x: float, base: float, sd: float, u: float
) -> None:
    """Learn ``x`` with weight ``u`` into bin ``h`` and the global statistic of state ``s``.

    Winsorised at ``base +- huber_c * sd`` for the bin once the bin itself is mature (weight >=
    bin_prior; a young bin that differs from the global level must be free to learn it), and at
    the global mean +- huber_c global spreads for the global statistic. A collapsed spread (all
    zeros so far) never clips."""
    mem = cfg[C_MEM]
    c = cfg[C_HUBER]
    floor = cfg[C_SDREL] * abs(s[G_MEAN]) + cfg[C_SDABS]
    b = h * 4
    wb, m2b = _decay_kernel(s[b + BIN_W], s[b + BIN_M2], t - s[b + BIN_T], mem)
    xb = x
    if wb >= cfg[C_PRIOR] and sd > floor:
        xb = _clip(x, base - c * sd, base + c * sd)
    wb, mb, m2b = _update_kernel(wb, s[b + BIN_MEAN], m2b, xb, u)
    s[b + BIN_W] = wb
    s[b + BIN_MEAN] = mb
    s[b + BIN_M2] = m2b
    s[b + BIN_T] = t
    wg, m2g = _decay_kernel(s[G_W], s[G_M2], t - s[G_T], mem)
    xg = x
    if wg >= cfg[C_PRIOR]:
        sdg = math.sqrt(m2g / wg) if m2g > 0.0 else 0.0
        if sdg > floor:
            xg = _clip(x, s[G_MEAN] - c * sdg, s[G_MEAN] + c * sdg)
    wg, mg, m2g = _update_kernel(wg, s[G_MEAN], m2g, xg, u)
    s[G_W] = wg
    s[G_MEAN] = mg
    s[G_M2] = m2g
    s[G_T] = t


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _process_kernel(
    cfg: np.ndarray,
    st: np.ndarray,
    eng: np.ndarray,
    ts: np.ndarray,
    vals: np.ndarray,
    out: np.ndarray,
    rows: np.ndarray,
    flags_out: np.ndarray,
) -> None:
    """Score ``n`` rows causally, updating ``st`` (m, N_STATE) and ``eng`` in place.

    Writes ``out`` (N_OUT, n, m), ``rows`` (N_ROW, n) and ``flags_out`` (n,) uint8.
    """
    n = vals.shape[0]
    m = vals.shape[1]
    mem = cfg[C_MEM]
    for i in range(n):
        t = ts[i]
        flags = 0
        ok = True
        dt = cfg[C_WUNIT]
        if not np.isfinite(t):
            flags |= FLAG_ORDER
            ok = False
        elif eng[E_NROWS] > 0:
            dt = t - eng[E_TPREV]
            if dt > cfg[C_JUMP] or dt < -cfg[C_JUMP]:
                flags |= FLAG_CLOCK | FLAG_GAP
                dt = cfg[C_WCAP]
            elif dt <= 0.0:
                flags |= FLAG_ORDER
                ok = False
            elif dt > cfg[C_GAP]:
                flags |= FLAG_GAP
        if dt > cfg[C_WCAP]:
            dt = cfg[C_WCAP]
        u_time = dt / cfg[C_WUNIT]
        dt_h = dt / 3600.0
        alpha = 1.0 - math.exp(-dt / cfg[C_SMOOTH])
        hh = 0
        if np.isfinite(t):
            hh = int((t % 86400.0) // 3600.0)
            if hh < 0 or hh >= N_BINS:
                hh = 0
        if ok:
            eng[E_TPREV] = t
            eng[E_NROWS] += 1.0
        raw = 0.0
        raw_l = 0.0  # the evidence before the daily discount: what the long-run statistic learns
        any_warm = False
        for j in range(m):
            ev = 0.0
            ev_l = 0.0
            s = st[j]
            x = vals[i, j]
            finite = np.isfinite(x) and abs(x) <= cfg[C_MAXABS]
            if not finite:
                flags |= FLAG_MISSING
            d = s[M_DIR]
            scale = s[M_SCALE]
            h_eff = cfg[C_H] * scale
            base, sd = _baseline_kernel(cfg, s, hh, t if ok else eng[E_TPREV])
            if not np.isfinite(base):
                base = x if finite else 0.0
            score = 0.0
            if ok and finite:
                z = (x - base) / sd
                zc = _clip(z, -cfg[C_ZCLIP], cfg[C_ZCLIP])
                if s[M_NVALID] == 0.0:
                    s[M_FIRST] = t
                    s[M_LEVEL] = x
                else:
                    fenv = math.exp(-(t - s[M_TLAST]) / cfg[C_ENVS])
                    s[M_ENVP] *= fenv
                    s[M_ENVN] *= fenv
                s[M_E] += alpha * (zc - s[M_E])
                ew, eq = _decay_kernel(s[M_EW], s[M_EQ], t - s[M_TLAST], mem)
                rms = math.sqrt((eq + cfg[C_EPW] * cfg[C_EPRMS] ** 2) / (ew + cfg[C_EPW]))
                if rms < cfg[C_EFLOOR]:
                    rms = cfg[C_EFLOOR]
                zs = s[M_E] / rms
                s[M_ZS] = zs
                if (
                    s[M_WARM] == 0.0
                    and s[M_NVALID] + 1.0 >= cfg[C_WARMN]
                    and t - s[M_FIRST] >= cfg[C_WARMS]
                ):
                    s[M_WARM] = 1.0
                if s[M_WARM] != 0.0:
                    zsc = _clip(zs, -cfg[C_ZSCLIP], cfg[C_ZSCLIP])
                    sp = max(0.0, s[M_SPOS] + (zsc - cfg[C_K]) * dt_h)
                    sn = max(0.0, s[M_SNEG] + (-zsc - cfg[C_K]) * dt_h)
                    if s[M_SPOS] == 0.0 and sp > 0.0:
                        s[M_RSPOS] = t
                    if s[M_SNEG] == 0.0 and sn > 0.0:
                        s[M_RSNEG] = t
                    s[M_SPOS] = min(sp, h_eff * cfg[C_CAP])
                    s[M_SNEG] = min(sn, h_eff * cfg[C_CAP])
                    zd = abs(z) if d == 0.0 else (z if d > 0.0 else -z)
                    # evidence: the part of |z| beyond envelope_factor x the envelope (largest
                    # deviation of the same sign, clipped, forgotten over envelope_s), then
                    # clipped: a recurring spike of the usual size is little news, a larger one
                    # or one of a new sign is
                    zcl = _clip(z, -cfg[C_SZCLIP], cfg[C_SZCLIP])
                    env = s[M_ENVP] if z >= 0.0 else s[M_ENVN]
                    if zd > 0.0:
                        ev = min(max(0.0, zd - cfg[C_ENVF] * env), cfg[C_SZCLIP])
                    ev_l = ev
                    if cfg[C_DENVS] > 0.0:
                        # a big deviation recurring at this time of day (seen at this hour or a
                        # neighbour on two different days, within daily_env_s) is no news: its
                        # size is discounted in full (the daily spike of a cron job)
                        ds = cfg[C_DENVS]
                        fh = math.exp(-(t - s[hh * 4 + BIN_T]) / ds)
                        s[D_ENV + hh] *= fh
                        s[D_CONF + hh] *= fh
                        denv = 0.0
                        near = 0.0
                        for dh in range(-1, 2):
                            k = (hh + dh) % N_BINS
                            fk = 1.0 if dh == 0 else math.exp(-(t - s[k * 4 + BIN_T]) / ds)
                            if s[D_CONF + k] * fk > denv:
                                denv = s[D_CONF + k] * fk
                            if t - s[D_TIME + k] >= 43200.0 and s[D_ENV + k] * fk > near:
                                near = s[D_ENV + k] * fk
                        denv *= cfg[C_DENVF]
                        if zd > 0.0 and denv > cfg[C_ENVF] * env:
                            ev = min(max(0.0, zd - denv), cfg[C_SZCLIP])
                        if abs(z) >= cfg[C_DENVZ]:
                            az = abs(zcl)
                            if near > 0.0:
                                s[D_CONF + hh] = max(s[D_CONF + hh], min(az, near))
                            if az > s[D_ENV + hh] or t - s[D_TIME + hh] >= 43200.0:
                                s[D_ENV + hh] = max(s[D_ENV + hh], az)
                                s[D_TIME + hh] = t
                    if zcl > s[M_ENVP]:
                        s[M_ENVP] = zcl
                    if -zcl > s[M_ENVN]:
                        s[M_ENVN] = -zcl
                    zd = zd / scale - cfg[C_Z0]
                    if zd > 0.0:
                        score = 1.0 - math.exp(-zd / cfg[C_SSCALE])
                # contamination protection (either side counts: sick must not become normal)
                pmax = max(s[M_SPOS], s[M_SNEG]) / h_eff
                protected = False
                if pmax >= cfg[C_PROTP]:
                    if not np.isfinite(s[M_PROT]):
                        s[M_PROT] = t
                    protected = (t - s[M_PROT]) < cfg[C_PROTMAX]
                else:
                    s[M_PROT] = np.nan
                u = u_time * (cfg[C_PROTW] if protected else 1.0)
                _learn_kernel(cfg, s, hh, t, x, base, sd, u)
                ec = _clip(s[M_E], -cfg[C_HUBER] * rms, cfg[C_HUBER] * rms)
                s[M_EW] = ew + u
                s[M_EQ] = eq + u * ec * ec
                s[M_LEVEL] += alpha * (x - s[M_LEVEL])
                s[M_NVALID] += 1.0
                s[M_TLAST] = t
            pp = s[M_SPOS] / h_eff
            pn = s[M_SNEG] / h_eff
            if d > 0.0 or (d == 0.0 and pp >= pn):
                p, start, sign = pp, s[M_RSPOS], 1.0
            else:
                p, start, sign = pn, s[M_RSNEG], -1.0
            if p > 1.0:
                p = 1.0
            out[O_SCORE, i, j] = score
            out[O_PERS, i, j] = p
            out[O_BASE, i, j] = base
            out[O_SD, i, j] = sd
            out[O_LEVEL, i, j] = s[M_LEVEL] if s[M_NVALID] > 0.0 else base
            out[O_START, i, j] = start
            out[O_DIR, i, j] = sign
            out[O_CONTRIB, i, j] = 0.0
            out[O_ZS, i, j] = s[M_ZS]
            if s[M_WARM] != 0.0:
                any_warm = True
                # evidence for the combined score: instantaneous |z| (this row's sample) plus the
                # standardised smoothed deviation |zs| (carried over missing samples), direction
                # aware, in z units (not saturating, so a second shift on top of a first shows)
                zsd = s[M_ZS]
                zsd = abs(zsd) if d == 0.0 else (zsd if d > 0.0 else -zsd)
                if zsd > 0.0:
                    ev += min(zsd, cfg[C_SZCLIP])
                    ev_l += min(zsd, cfg[C_SZCLIP])
                ev /= scale
                ev_l /= scale
                if ev > raw:
                    raw = ev
                if ev_l > raw_l:
                    raw_l = ev_l
        if not any_warm:
            flags |= FLAG_WARMUP
        flags_out[i] = flags
        rows[R_EVENT, i] = 0.0
        rows[R_ESCORE, i] = 0.0
        if not ok:
            rows[R_COMB, i] = eng[E_LASTCOMB]
            continue
        # ---- events: summed persistence of warm contributing metrics ----
        total = 0.0
        for j in range(m):
            if st[j, M_WARM] != 0.0 and out[O_PERS, i, j] >= cfg[C_CONTRIB]:
                total += out[O_PERS, i, j]
        if total >= cfg[C_EVSUM]:
            if eng[E_ARMED] != 0.0 and t - eng[E_LASTEV] >= cfg[C_COOL]:
                eng[E_ARMED] = 0.0
                eng[E_LASTEV] = t
                rows[R_EVENT, i] = 1.0
                keep = 1.0
                for j in range(m):
                    if st[j, M_WARM] != 0.0 and out[O_PERS, i, j] >= cfg[C_CONTRIB]:
                        out[O_CONTRIB, i, j] = 1.0
                        zz = min(1.0, 2.0 * abs(out[O_ZS, i, j]) / cfg[C_ZSCLIP])
                        keep *= 1.0 - 0.6 * out[O_PERS, i, j] * zz
                rows[R_ESCORE, i] = 1.0 - keep
        else:
            eng[E_ARMED] = 1.0
        # ---- combined: surprise of the short-term evidence against its long-run distribution ----
        # the short average gives one row at most surprise_step_cap typical steps of weight: the
        # lone row after a gap (irregular sampling) is not the whole short-term evidence
        stp = eng[E_STEP]
        if eng[E_NROWS] > 1.0:  # the first row has no step
            if stp <= 0.0:
                stp = dt
            elif dt > stp:
                stp = min(stp * STEP_RATE, dt)
            elif dt < stp:
                stp = max(stp / STEP_RATE, dt)
            eng[E_STEP] = stp
        dts = dt
        if cfg[C_SSTEP] > 0.0 and stp > 0.0 and dts > cfg[C_SSTEP] * stp:
            dts = cfg[C_SSTEP] * stp
        a = 1.0 - math.exp(-dts / cfg[C_SSHORT])
        eng[E_SHORT] += a * (raw - eng[E_SHORT])
        lw, lm2 = _decay_kernel(eng[E_LW], eng[E_LM2], dt, cfg[C_SLONG])
        comb = 0.0
        if any_warm and lw > 0.0:
            sdl = math.sqrt(lm2 / lw)
            if sdl < cfg[C_SFLOOR]:
                sdl = cfg[C_SFLOOR]
            zl = (eng[E_SHORT] - eng[E_LMEAN]) / sdl
            if zl > 0.0:
                comb = 1.0 - math.exp(-zl / cfg[C_SURSCALE])
        # refractory: a score below the recent peak (decaying over refractory_s) is damped, so one
        # episode gives one high score, not a run of them
        # (hard refractory: once the peak is at refractory_level or more, a score must beat it by
        # refractory_margin to pass undamped: a rising edge of one episode alerts once)
        peak = eng[E_PEAK] * math.exp(-dt / cfg[C_REFR])
        damp = comb <= peak or (peak >= cfg[C_REFRL] and comb <= peak + cfg[C_REFRM])
        if comb > peak:
            peak = comb
        if damp:
            comb *= cfg[C_REFRF]
        eng[E_PEAK] = peak
        if any_warm:
            lw, lmean, lm2 = _update_kernel(lw, eng[E_LMEAN], lm2, raw_l, u_time)
            eng[E_LMEAN] = lmean
        eng[E_LW] = lw
        eng[E_LM2] = lm2
        eng[E_LASTCOMB] = comb
        rows[R_COMB, i] = comb


def work_size(n_metrics: int) -> int:
    """Length of the one-row workspace used by :func:`_step_kernel`."""
    return 1 + N_CFG + N_ENG + n_metrics * N_STATE + 1 + n_metrics + N_OUT * n_metrics + N_ROW + 1


def work_views(work: np.ndarray, n_metrics: int) -> dict[str, np.ndarray]:
    """Named numpy views into a workspace (same layout as :func:`_step_kernel`)."""
    m = n_metrics
    a = 1 + N_CFG
    b = a + N_ENG
    c = b + m * N_STATE
    return {
        "cfg": work[1:a],
        "eng": work[a:b],
        "st": work[b:c].reshape(m, N_STATE),
        "ts": work[c : c + 1],
        "vals": work[c + 1 : c + 1 + m].reshape(1, m),
        "out": work[c + 1 + m : c + 1 + m + N_OUT * m].reshape(N_OUT, 1, m),
        "rows": work[c + 1 + m + N_OUT * m : c + 1 + m + N_OUT * m + N_ROW].reshape(N_ROW, 1),
        "spare": work[-1:],
    }


@njit(cache=True, fastmath=config.EDGELOOP_FASTMATH)
def _step_kernel(work: np.ndarray, flags: np.ndarray) -> None:
    """One row through :func:`_process_kernel`, everything packed in one array (two-arg call).

    Layout: ``[m, cfg, eng, state (m x N_STATE), ts, values (m), out (N_OUT x m), rows, spare]``;
    ``flags`` is a preallocated (1,) uint8 array.
    """
    m = int(work[0])
    a = 1 + N_CFG
    b = a + N_ENG
    c = b + m * N_STATE
    d = c + 1 + m
    e = d + N_OUT * m
    _process_kernel(
        work[1:a],
        work[b:c].reshape((m, N_STATE)),
        work[a:b],
        work[c : c + 1],
        work[c + 1 : d].reshape((1, m)),
        work[d:e].reshape((N_OUT, 1, m)),
        work[e : e + N_ROW].reshape((N_ROW, 1)),
        flags,
    )
