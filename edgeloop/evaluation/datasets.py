"""Loaders for the real evaluation data: the NAB v1.1 subset and the Stanford COVID wearables.

The data lives outside the repository, in ``shared/data`` beside the clone (``/work/shared/data``
when the repo is ``/work/main``). Set ``EDGELOOP_DATA`` to point elsewhere. Only numpy and the
standard library are used (no pandas).
"""

from __future__ import annotations

import csv
import json
import lzma
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

ENV_VAR = "EDGELOOP_DATA"
STANFORD_DIR = "stanford_covid_wearables"
NAB_DIR = "nab"
WISDM_DIR = "wisdm2019_watch_accel"

__all__ = [
    "ENV_VAR",
    "DataNotFoundError",
    "LaadResult",
    "NabCorpus",
    "StanfordLabel",
    "StanfordRecord",
    "data_root",
    "dataset_dir",
    "laad_published",
    "load_nab",
    "load_stanford",
    "stanford_ids",
    "stanford_labels",
]


class DataNotFoundError(FileNotFoundError):
    """The evaluation data folder (or a file in it) is missing."""


def data_root() -> Path:
    """Return the data root: ``$EDGELOOP_DATA`` if set, else ``<repo>/../shared/data``.

    Raises DataNotFoundError naming the path tried and the environment variable.
    """
    env = os.environ.get(ENV_VAR)
    root = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    root = root.resolve()
    if not root.is_dir():
        source = (
            f"${ENV_VAR}={env!r}" if env else f"the default (repo/../shared/data; {ENV_VAR} unset)"
        )
        raise DataNotFoundError(
            f"evaluation data folder not found: expected a directory at {root} from {source}; "
            f"copy shared/data beside the repository or set {ENV_VAR} to the folder holding "
            f"'{NAB_DIR}/' and '{STANFORD_DIR}/'"
        )
    return root


def dataset_dir(name: str) -> Path:
    """One data set's folder under :func:`data_root` (``NAB_DIR``, ``STANFORD_DIR``, ``WISDM_DIR``);
    DataNotFoundError names the path when it is missing. The one way every loader, script and
    test finds evaluation data."""
    return _require(data_root() / name, f"data set '{name}'")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataNotFoundError(
            f"{what} not found at {path}; the data root is {ENV_VAR} or repo/../shared/data"
        )
    return path


# ----------------------------------------------------------------------------- NAB


class NabCorpus(NamedTuple):
    """NAB files and labelled windows, keyed like ``"realTraffic/speed_6005.csv"``."""

    series: dict[str, tuple[np.ndarray, np.ndarray]]  # key -> (datetime64[ns], float64 values)
    windows: dict[str, list[tuple[np.datetime64, np.datetime64]]]


def _read_nab_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if header[:2] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected header 'timestamp,value', found {header!r}")
        stamps: list[str] = []
        values: list[float] = []
        for row in reader:
            stamps.append(row[0])
            values.append(float(row[1]))
    return np.array(stamps, dtype="datetime64[ns]"), np.array(values, dtype=np.float64)


def load_nab(
    root: str | os.PathLike[str] | None = None, keys: list[str] | None = None
) -> NabCorpus:
    """Load NAB data files and ``labels/combined_windows.json``.

    root: the ``nab`` folder (default ``data_root()/nab``). keys: optional subset of file keys.
    Returns ``NabCorpus(series, windows)``; timestamps are sorted datetime64[ns].
    """
    nab = Path(root) if root is not None else data_root() / NAB_DIR
    labels_path = _require(nab / "labels" / "combined_windows.json", "NAB windows file")
    with labels_path.open() as fh:
        raw_windows: dict[str, list[list[str]]] = json.load(fh)
    wanted = sorted(raw_windows) if keys is None else list(keys)
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    windows: dict[str, list[tuple[np.datetime64, np.datetime64]]] = {}
    for key in wanted:
        if key not in raw_windows:
            raise KeyError(f"NAB file {key!r} has no entry in {labels_path}")
        ts, values = _read_nab_csv(_require(nab / "data" / key, f"NAB data file {key!r}"))
        series[key] = (ts, values)
        windows[key] = [
            (np.datetime64(a, "ns"), np.datetime64(b, "ns")) for a, b in raw_windows[key]
        ]
    return NabCorpus(series, windows)


# ----------------------------------------------------------------------------- Stanford


@dataclass(frozen=True)
class StanfordRecord:
    """One person's Fitbit streams (timestamps are naive local time, datetime64[s])."""

    person_id: str
    hr_ts: np.ndarray  # datetime64[s]
    hr_bpm: np.ndarray  # float64
    steps_ts: np.ndarray  # datetime64[s]
    steps: np.ndarray  # float64
    hr_path: Path
    steps_path: Path

    @property
    def hr(self) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps, bpm)."""
        return self.hr_ts, self.hr_bpm

    @property
    def steps_series(self) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps, steps per minute)."""
        return self.steps_ts, self.steps


def _read_xz_series(path: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    with lzma.open(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        try:
            i_dt, i_val = header.index("datetime"), header.index(column)
        except ValueError:
            raise ValueError(
                f"{path}: expected columns 'datetime' and {column!r}, found {header!r}"
            ) from None
        stamps: list[str] = []
        values: list[str] = []
        for row in reader:
            stamps.append(row[i_dt])
            values.append(row[i_val])
    ts = np.array(stamps, dtype="datetime64[s]")
    vals = np.array(values, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    if not np.all(order == np.arange(len(order))):
        ts, vals = ts[order], vals[order]
    return ts, vals


def stanford_ids(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Person ids that have both heart-rate and steps files."""
    folder = Path(root) if root is not None else data_root() / STANFORD_DIR
    hr = {p.name.removesuffix("_hr.csv.xz") for p in folder.glob("*_hr.csv.xz")}
    st = {p.name.removesuffix("_steps.csv.xz") for p in folder.glob("*_steps.csv.xz")}
    return sorted(hr & st)


def load_stanford(person_id: str, root: str | os.PathLike[str] | None = None) -> StanfordRecord:
    """Load one person's heart rate (bpm) and 1-minute steps from the ``.csv.xz`` files."""
    folder = Path(root) if root is not None else data_root() / STANFORD_DIR
    hr_path = _require(folder / f"{person_id}_hr.csv.xz", f"heart-rate file of {person_id!r}")
    steps_path = _require(folder / f"{person_id}_steps.csv.xz", f"steps file of {person_id!r}")
    hr_ts, hr = _read_xz_series(hr_path, "heartrate")
    st_ts, st = _read_xz_series(steps_path, "steps")
    return StanfordRecord(person_id, hr_ts, hr, st_ts, st, hr_path, steps_path)


def _day(text: str) -> np.datetime64 | None:
    text = text.strip()
    return np.datetime64(text, "D") if text else None


def _num(text: str) -> float | None:
    text = text.strip()
    return float(text) if text else None


@dataclass(frozen=True)
class StanfordLabel:
    """Dates from ``labels.csv`` in the files' (privacy-shifted) time base."""

    person_id: str
    symptom_date: np.datetime64 | None  # symptom_date_in_file
    symptom_date_alt: np.datetime64 | None
    diagnosis_date: np.datetime64 | None  # diagnosis_date_in_file
    diagnosis_date_alt: np.datetime64 | None
    alignment: str
    raw: dict[str, str]

    @property
    def onset(self) -> np.datetime64 | None:
        """Symptom onset, falling back to the diagnosis date when no symptom date is known."""
        return self.symptom_date if self.symptom_date is not None else self.diagnosis_date

    @property
    def onset_source(self) -> str:
        """Which column ``onset`` came from ('symptom', 'diagnosis' or 'none')."""
        if self.symptom_date is not None:
            return "symptom"
        return "diagnosis" if self.diagnosis_date is not None else "none"


def stanford_labels(root: str | os.PathLike[str] | None = None) -> dict[str, StanfordLabel]:
    """Parse ``labels.csv`` into ``person_id -> StanfordLabel``."""
    folder = Path(root) if root is not None else data_root() / STANFORD_DIR
    path = _require(folder / "labels.csv", "Stanford labels file")
    out: dict[str, StanfordLabel] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            pid = row["id"]
            out[pid] = StanfordLabel(
                person_id=pid,
                symptom_date=_day(row["symptom_date_in_file"]),
                symptom_date_alt=_day(row["symptom_date_in_file_alt"]),
                diagnosis_date=_day(row["diagnosis_date_in_file"]),
                diagnosis_date_alt=_day(row["diagnosis_date_in_file_alt"]),
                alignment=row["alignment"],
                raw=dict(row),
            )
    return out


@dataclass(frozen=True)
class LaadResult:
    """LAAD's published per-person row (Bogu & Snyder 2021); None where the person is absent."""

    person_id: str
    timing: str | None  # "Early" / "Late"
    first_anomaly_day_rel_onset: float | None  # days, negative = before onset
    precision: float | None
    recall: float | None
    signal: str | None
    abnormal_rhr_hours: float | None


def laad_published(root: str | os.PathLike[str] | None = None) -> dict[str, LaadResult]:
    """Parse ``laad_published_per_person.csv`` into ``person_id -> LaadResult``."""
    folder = Path(root) if root is not None else data_root() / STANFORD_DIR
    path = _require(folder / "laad_published_per_person.csv", "LAAD published results file")
    out: dict[str, LaadResult] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            pid = row["id"]
            out[pid] = LaadResult(
                person_id=pid,
                timing=row["timing"].strip() or None,
                first_anomaly_day_rel_onset=_num(row["first_anomaly_day_rel_onset"]),
                precision=_num(row["precision"]),
                recall=_num(row["recall"]),
                signal=row["signal"].strip() or None,
                abnormal_rhr_hours=_num(row["abnormal_RHR_hours"]),
            )
    return out
