"""The factory release: the activity model shipped inside the agent package.

The one place the cloud reads the device's shipped model (as a library, like the release check's
engine replay): the layer test allows ``cloud.releases`` and ``cloud.regression`` to import it.
"""

from __future__ import annotations

import time

from cloud.regression.check import ReleaseRef
from cloud.releases.rollout import current_release, register_release
from cloud.store.db import CloudStore
from device.inference.classifier import load_manifest


def register_factory_release(store: CloudStore) -> None:
    """The model shipped in the agent package is the fleet's release until a rollout replaces it,
    so release checks compare candidates against it."""
    m = load_manifest()
    if current_release(store, m["name"]) is None:
        register_release(store, ReleaseRef(m["name"], str(m["version"]), m["sha256"]), status="fleet",
                         now=time.time(), detector_config={})
