"""Packed-array layout of the deviation kernels: config vector, state rows, outputs, flags.

Every offset is generated from a tuple of names (and widths), so adding a field is one edit
here and the kernels, the wrapper (:mod:`device.detect.engine`) and the tests follow. Numba reads
the module-level integers below as compile-time constants.

>>> STATE_OFFSETS["tlast"], STATE_OFFSETS["d_env"], STATE_OFFSETS["nv_proto"], N_STATE
(100, 118, 190, 367)
"""

from __future__ import annotations

import numpy as np


def offsets(fields: tuple[tuple[str, int], ...]) -> tuple[dict[str, int], int]:
    """``({name: offset}, total)`` for consecutive fields of the given widths."""
    out: dict[str, int] = {}
    at = 0
    for name, width in fields:
        if name in out or width <= 0:
            raise ValueError(f"layout field {name!r}: names must be unique and widths > 0")
        out[name] = at
        at += width
    return out, at


# ---- config vector: the EngineConfig fields that reach the kernels, in this order ----
CFG_FIELDS: tuple[str, ...] = (
    "memory_s", "weight_unit_s", "weight_cap_s", "bin_prior", "huber_c", "sd_floor_rel",
    "sd_floor_abs", "z_clip", "smooth_s", "e_prior_weight", "e_prior_rms", "e_rms_floor",
    "cusum_k", "cusum_h", "cusum_cap", "zs_clip", "spike_z0", "spike_scale", "warmup_s",
    "warmup_n", "protect_p", "protect_weight", "protect_max_s", "contrib_p", "event_sum",
    "cooldown_s", "gap_s", "clock_jump_s", "surprise_short_s", "surprise_long_s",
    "surprise_floor", "surprise_scale", "bin_sd_floor", "max_abs_value", "surprise_z_clip",
    "refractory_s", "refractory_factor", "envelope_s", "envelope_factor", "refractory_level",
    "refractory_margin", "surprise_step_cap", "daily_env_s", "daily_env_z", "daily_env_factor",
    "novelty_seg_s", "novelty_vigilance", "novelty_rate", "novelty_memory_s", "novelty_min_segments",
)  # fmt: skip
CFG = {name: i for i, name in enumerate(CFG_FIELDS)}
(C_MEM, C_WUNIT, C_WCAP, C_PRIOR, C_HUBER, C_SDREL, C_SDABS, C_ZCLIP, C_SMOOTH, C_EPW, C_EPRMS,
 C_EFLOOR, C_K, C_H, C_CAP, C_ZSCLIP, C_Z0, C_SSCALE, C_WARMS, C_WARMN, C_PROTP, C_PROTW,
 C_PROTMAX, C_CONTRIB, C_EVSUM, C_COOL, C_GAP, C_JUMP, C_SSHORT, C_SLONG,
 C_SFLOOR, C_SURSCALE, C_BINSD, C_MAXABS, C_SZCLIP, C_REFR, C_REFRF, C_ENVS, C_ENVF, C_REFRL,
 C_REFRM, C_SSTEP, C_DENVS, C_DENVZ, C_DENVF, C_NVSEG, C_NVVIG, C_NVRATE, C_NVMEM,
 C_NVMIN) = range(len(CFG_FIELDS))  # fmt: skip
N_CFG = len(CFG_FIELDS)

# ---- per-metric state row ----
N_BINS = 24
NV_CATS = 16  # pattern novelty: remembered window shapes (categories) ...
NV_WINDOW = 8  # ... of this many segments each
BIN_W, BIN_MEAN, BIN_M2, BIN_T = 0, 1, 2, 3  # offsets inside one bin (4 floats per bin)
STATE_FIELDS: tuple[tuple[str, int], ...] = (
    ("bins", 4 * N_BINS),  # per hour of day: weighted Welford (w, mean, m2, t)
    ("g_w", 1), ("g_mean", 1), ("g_m2", 1), ("g_t", 1),  # the global statistic
    ("tlast", 1),  # time of the last valid sample
    ("e", 1), ("ew", 1), ("eq", 1),  # smoothed z, the weight and weighted sum of e^2 of its RMS
    ("spos", 1), ("sneg", 1), ("rspos", 1), ("rsneg", 1),  # CUSUM sums and their run starts
    ("first", 1), ("nvalid", 1),  # time of the first valid sample, valid samples seen
    ("dir", 1), ("scale", 1),  # direction that counts (-1, 0, +1), widen factor
    ("prot", 1), ("level", 1), ("zs", 1), ("warm", 1),  # protected since, observed level, zs, warm
    ("envp", 1), ("envn", 1),  # envelope: decaying max of past warm z above / below the baseline
    # per hour of day: largest recent big |z| (as of the hour bin's time), when it was recorded,
    # and the "daily" level: a big |z| seen on two different days at this hour (or a neighbour)
    ("d_env", N_BINS), ("d_time", N_BINS), ("d_conf", N_BINS),
    # pattern novelty (device/kernels/novelty.py): category prototypes, their weights and when each
    # was last used, the window of segment means (a ring, next slot at nv_wpos), the segment being
    # filled, segments seen, and the raw novelty's running null (w, mean, m2)
    ("nv_proto", NV_CATS * NV_WINDOW), ("nv_weight", NV_CATS), ("nv_used", NV_CATS),
    ("nv_win", NV_WINDOW), ("nv_wpos", 1), ("nv_seg_sum", 1), ("nv_seg_n", 1),
    ("nv_seg_start", 1), ("nv_nseg", 1), ("nv_nw", 1), ("nv_nmean", 1), ("nv_nm2", 1),
)  # fmt: skip
STATE_OFFSETS, N_STATE = offsets(STATE_FIELDS)
_S = STATE_OFFSETS
G_W, G_MEAN, G_M2, G_T = _S["g_w"], _S["g_mean"], _S["g_m2"], _S["g_t"]
M_TLAST, M_E, M_EW, M_EQ = _S["tlast"], _S["e"], _S["ew"], _S["eq"]
M_SPOS, M_SNEG, M_RSPOS, M_RSNEG = _S["spos"], _S["sneg"], _S["rspos"], _S["rsneg"]
M_FIRST, M_NVALID, M_DIR, M_SCALE = _S["first"], _S["nvalid"], _S["dir"], _S["scale"]
M_PROT, M_LEVEL, M_ZS, M_WARM = _S["prot"], _S["level"], _S["zs"], _S["warm"]
M_ENVP, M_ENVN = _S["envp"], _S["envn"]
D_ENV, D_TIME, D_CONF = _S["d_env"], _S["d_time"], _S["d_conf"]
NV_PROTO, NV_WEIGHT, NV_USED, NV_WIN = _S["nv_proto"], _S["nv_weight"], _S["nv_used"], _S["nv_win"]
NV_WPOS, NV_SEG_SUM, NV_SEG_N, NV_SEG_START = (_S["nv_wpos"], _S["nv_seg_sum"], _S["nv_seg_n"],
                                              _S["nv_seg_start"])  # fmt: skip
NV_NSEG, NV_NW, NV_NMEAN, NV_NM2 = _S["nv_nseg"], _S["nv_nw"], _S["nv_nmean"], _S["nv_nm2"]

# ---- engine state (one per individual) ----
ENG_FIELDS: tuple[str, ...] = (
    "tprev", "nrows",  # time of the last accepted row, rows accepted
    "lastev", "armed",  # the decider: time of the last event, re-armed since
    "short", "lw", "lmean", "lm2",  # surprise: short average of evidence, its long-run statistic
    "lastcomb", "peak",  # last combined score, refractory peak
    "step",  # typical time step: running median of dt (0 = not seen yet)
    "spare",
)  # fmt: skip
(E_TPREV, E_NROWS, E_LASTEV, E_ARMED, E_SHORT, E_LW, E_LMEAN, E_LM2, E_LASTCOMB, E_PEAK,
 E_STEP, E_SPARE) = range(len(ENG_FIELDS))  # fmt: skip
N_ENG = len(ENG_FIELDS)
STEP_RATE = 1.05  # the typical step moves by this factor per row towards dt

# ---- outputs: per metric (N_OUT, n, m), per row (N_ROW, n) and flags (n,) uint8 ----
OUT_FIELDS: tuple[str, ...] = (
    "score", "pers", "base", "sd", "level", "start", "dir", "contrib", "zs", "warm", "novel",
)  # fmt: skip
(O_SCORE, O_PERS, O_BASE, O_SD, O_LEVEL, O_START, O_DIR, O_CONTRIB, O_ZS,
 O_WARM, O_NOVEL) = range(len(OUT_FIELDS))  # fmt: skip
N_OUT = len(OUT_FIELDS)
ROW_FIELDS: tuple[str, ...] = ("comb", "event", "escore")
R_COMB, R_EVENT, R_ESCORE = range(len(ROW_FIELDS))
N_ROW = len(ROW_FIELDS)

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


# ---- the one-row workspace of the two-argument step kernel ----
# [m, cfg, eng, state (m x N_STATE), ts, values (m), out (N_OUT x m), rows (N_ROW), spare]


def work_size(n_metrics: int) -> int:
    """Length of the one-row workspace used by ``_step_kernel``."""
    return 1 + N_CFG + N_ENG + n_metrics * N_STATE + 1 + n_metrics + N_OUT * n_metrics + N_ROW + 1


def work_views(work: np.ndarray, n_metrics: int) -> dict[str, np.ndarray]:
    """Named numpy views into a workspace (same layout as ``_step_kernel``)."""
    m = n_metrics
    a = 1 + N_CFG
    b = a + N_ENG
    c = b + m * N_STATE
    d = c + 1 + m
    e = d + N_OUT * m
    return {
        "cfg": work[1:a],
        "eng": work[a:b],
        "st": work[b:c].reshape(m, N_STATE),
        "ts": work[c : c + 1],
        "vals": work[c + 1 : d].reshape(1, m),
        "out": work[d:e].reshape(N_OUT, 1, m),
        "rows": work[e : e + N_ROW].reshape(N_ROW, 1),
        "spare": work[-1:],
    }
