"""The pattern-novelty channel: how new is the recent *shape* of a metric, against its own null.

The baseline channel sees level and spread against this individual's baseline; this one sees the
shape of the last few hours, after ideas of ARTime (adaptive-resonance categories of window
shapes), CAD OSE (how novel the current context is) and HTM (raw novelty turned into a tail
probability against its own recent distribution). Per metric, on a coarser time scale than the
rows:

1. *segments*: the baseline ``z`` (clipped to +-4) is averaged over ``novelty_seg_s`` of time;
2. *window*: the last ``NV_WIN`` segment means, scaled to [0, 1], form the current shape;
3. *categories*: up to ``NV_CATS`` remembered shapes (prototypes), each with a weight that decays
   over ``novelty_memory_s``. The best match has similarity ``1 - mean |shape - prototype|``; when
   it reaches the vigilance ``novelty_vigilance`` (resonance) the prototype learns the shape
   (rate ``novelty_rate``), else the shape becomes a new category in the slot of the weakest
   one. The raw novelty is ``1 - best similarity`` (0 before any category exists);
4. *calibration*: the raw novelty is standardised against its own running mean and spread
   (forgetting over ``novelty_memory_s``; floor ``NV_SD_FLOOR``); ``z`` only after
   ``novelty_min_segments`` segments (a day of shapes). One-sided: only unusually novel counts.

The helpers take the metric's state row ``s`` (slots in :mod:`device.kernels.layout`) and
return the novelty ``z`` of a completed segment (NaN while the segment is still filling).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from device.kernels import config
from device.kernels.layout import (
    NV_CATS,
    NV_NM2,
    NV_NMEAN,
    NV_NSEG,
    NV_NW,
    NV_PROTO,
    NV_SEG_N,
    NV_SEG_START,
    NV_SEG_SUM,
    NV_USED,
    NV_WEIGHT,
    NV_WIN,
    NV_WINDOW,
    NV_WPOS,
)
from device.kernels.welford import _decay_kernel, _update_kernel

_JIT: dict[str, Any] = {"cache": True, "fastmath": config.EDGELOOP_FASTMATH, "inline": "always"}
NV_Z_CLIP = 4.0  # segment means of z clipped here, shapes scaled from [-4, 4] to [0, 1]
NV_SD_FLOOR = 0.02  # floor of the raw novelty's spread (similarity units)


@njit(**_JIT)
def _shape_match(s: np.ndarray, t: float, memory: float) -> tuple[int, float, int]:
    """``(best category, its similarity, weakest slot)`` for the current window (in time order).
    Weights are read forgotten to ``t``; an empty slot has weight 0 and never matches."""
    best = -1
    best_sim = -1.0
    weakest = 0
    weakest_w = math.inf
    pos = int(s[NV_WPOS])
    for c in range(NV_CATS):
        w = s[NV_WEIGHT + c] * math.exp(-(t - s[NV_USED + c]) / memory) if memory > 0.0 else s[NV_WEIGHT + c]
        if w < weakest_w:
            weakest_w = w
            weakest = c
        if s[NV_WEIGHT + c] <= 0.0:
            continue
        dist = 0.0
        for k in range(NV_WINDOW):
            dist += abs(s[NV_WIN + (pos + k) % NV_WINDOW] - s[NV_PROTO + c * NV_WINDOW + k])
        sim = 1.0 - dist / NV_WINDOW
        if sim > best_sim:
            best_sim = sim
            best = c
    return best, best_sim, weakest


@njit(**_JIT)
def _novelty_segment(s: np.ndarray, t: float, vigilance: float, rate: float, memory: float
                     ) -> float:  # fmt: skip
    """Close the segment (at ``t``, the first sample after it): the window moves on and the
    categories learn. Returns the raw novelty, 1 - the best similarity (NaN while the window is
    not yet full; 0 when no category exists)."""
    m = s[NV_SEG_SUM] / s[NV_SEG_N]
    m = min(max(m, -NV_Z_CLIP), NV_Z_CLIP)
    pos = int(s[NV_WPOS])
    s[NV_WIN + pos] = (m + NV_Z_CLIP) / (2.0 * NV_Z_CLIP)
    s[NV_WPOS] = (pos + 1) % NV_WINDOW
    s[NV_NSEG] += 1.0
    s[NV_SEG_SUM] = 0.0
    s[NV_SEG_N] = 0.0
    if s[NV_NSEG] < NV_WINDOW:
        return np.nan
    best, sim, weakest = _shape_match(s, t, memory)
    pos = int(s[NV_WPOS])  # the oldest segment: the window starts here
    if best >= 0 and sim >= vigilance:  # resonance: the category learns the shape
        for k in range(NV_WINDOW):
            p = NV_PROTO + best * NV_WINDOW + k
            s[p] += rate * (s[NV_WIN + (pos + k) % NV_WINDOW] - s[p])
        f = math.exp(-(t - s[NV_USED + best]) / memory) if memory > 0.0 else 1.0
        s[NV_WEIGHT + best] = s[NV_WEIGHT + best] * f + 1.0
        s[NV_USED + best] = t
    else:  # a new shape: it takes the weakest slot
        for k in range(NV_WINDOW):
            s[NV_PROTO + weakest * NV_WINDOW + k] = s[NV_WIN + (pos + k) % NV_WINDOW]
        s[NV_WEIGHT + weakest] = 1.0
        s[NV_USED + weakest] = t
    return 1.0 - sim if best >= 0 else 0.0


@njit(**_JIT)
def _novelty_null(s: np.ndarray, raw: float, seg_s: float, memory: float, min_segments: float
                  ) -> float:  # fmt: skip
    """Standardise ``raw`` against the running null (read before it learns ``raw``; each segment
    weighs 1 and the null forgets by ``exp(-seg_s / memory)`` per segment), then learn it.
    NaN until ``min_segments`` segments were seen."""
    nw, nm2 = _decay_kernel(s[NV_NW], s[NV_NM2], seg_s, memory)
    z = np.nan
    if s[NV_NSEG] >= min_segments and nw > 0.0:
        sd = math.sqrt(nm2 / nw)
        if sd < NV_SD_FLOOR:
            sd = NV_SD_FLOOR
        z = (raw - s[NV_NMEAN]) / sd
    nw, s[NV_NMEAN], nm2 = _update_kernel(nw, s[NV_NMEAN], nm2, raw, 1.0)
    s[NV_NW] = nw
    s[NV_NM2] = nm2
    return z


@njit(**_JIT)
def _novelty(s: np.ndarray, t: float, z: float, seg_s: float, vigilance: float, rate: float,
             memory: float, min_segments: float) -> float:  # fmt: skip
    """One valid sample's ``z`` at ``t``: when it falls ``seg_s`` or more after its segment's
    start, the segment is closed first (the novelty z of that segment is returned, else NaN);
    then the sample joins the (new) segment. Off when ``seg_s`` is 0."""
    if seg_s <= 0.0:
        return np.nan
    out = np.nan
    if s[NV_SEG_N] > 0.0 and t - s[NV_SEG_START] >= seg_s:
        raw = _novelty_segment(s, t, vigilance, rate, memory)
        if np.isfinite(raw):
            out = _novelty_null(s, raw, seg_s, memory, min_segments)
    if s[NV_SEG_N] == 0.0:
        s[NV_SEG_START] = t
    s[NV_SEG_SUM] += min(max(z, -NV_Z_CLIP), NV_Z_CLIP)
    s[NV_SEG_N] += 1.0
    return out
