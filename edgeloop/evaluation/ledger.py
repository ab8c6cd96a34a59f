"""The ledger of scored variants: how many detectors have been tried on the same evaluation data.

Many variants scored on few files is how a benchmark gets overfitted, so every run of
``scripts/bench_quality`` and ``scripts/nab_folds`` records what it scored. A *variant* is a
distinct set of outputs on a data set (the fingerprint hashes every score, or every alert time),
so re-running an unchanged detector adds nothing, and any change of code or settings that
changes an output counts once. The ledger is a tab-separated file kept in the repository
(``edgeloop/evaluation/variants.tsv``); ``EDGELOOP_LEDGER`` points elsewhere (tests do).
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_PATH", "ENV_VAR", "PRIOR", "Ledger", "fingerprint"]

ENV_VAR = "EDGELOOP_LEDGER"
DEFAULT_PATH = Path(__file__).resolve().with_name("variants.tsv")
_FIELDS = ("fingerprint", "dataset", "date", "label", "summary")
# Scored before the ledger existed (device/detect/README.md, NAB rounds 0-5, and the Stanford
# attempts there): counted from the tables, one per configuration row or value scanned.
PRIOR = {"nab": 270, "stanford": 120}
# nab: about 95, 90, 35, 40 and 8 in rounds 0-5; stanford: about 30 in the README's attempts and
# about 90 (night watch designs x red levels) scored while the night watch was designed, before
# the ledger recorded Stanford runs


def fingerprint(arrays: Iterable[np.ndarray | Iterable[float]]) -> str:
    """A short hash of every value (float64, in order): the identity of a variant's outputs."""
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


@dataclass
class Ledger:
    """Read, count and append scored variants."""

    path: Path

    @classmethod
    def default(cls) -> Ledger:
        """The repository's ledger, or ``$EDGELOOP_LEDGER``."""
        env = os.environ.get(ENV_VAR)
        return cls(Path(env) if env else DEFAULT_PATH)

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))

    def count(self, dataset: str) -> int:
        """Distinct variants recorded for ``dataset``."""
        return len({r["fingerprint"] for r in self.rows() if r["dataset"] == dataset})

    def record(self, fp: str, dataset: str, label: str, summary: str) -> bool:
        """Add a variant unless its fingerprint is known for ``dataset``; True when it was new."""
        if any(r["fingerprint"] == fp and r["dataset"] == dataset for r in self.rows()):
            return False
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            if new:
                w.writerow(_FIELDS)
            w.writerow([fp, dataset, time.strftime("%Y-%m-%d"), label.replace("\t", " "),
                        summary.replace("\t", " ")])  # fmt: skip
        return True
