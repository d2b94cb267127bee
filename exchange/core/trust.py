"""The manifest a node trusts now, replaceable while the node runs.

Every part of a node that asks the manifest anything (who is a partner, which CA
vouches for whom, which keys sign, what each partner may hold) holds this one
``Trust`` and reads ``.manifest`` at the moment it decides, never a copy taken at
start. ``replace`` swaps the value atomically (a reader sees the old manifest or the
new one, never a mix) and then tells the listeners, in the order they registered,
so that what is derived from the manifest (caches, channels, the store's
distrusted keys, holdings) follows it. Deciding *whether* a manifest may replace
another (signatures, version, expiry) is not this module's job: see
``exchange.records.manifests`` and ``exchange.node.server.Node.adopt``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from exchange.core.manifest import Manifest

# Called with (old, new) after the swap, on the thread that replaced it.
Listener = Callable[[Manifest, Manifest], None]


class Trust:
    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest
        self._listeners: list[Listener] = []
        # Held across the swap and the listeners: two replacements never interleave, so
        # the listeners see the versions in the order they were adopted.
        self._replacing = threading.RLock()

    @property
    def manifest(self) -> Manifest:
        # One attribute read: atomic under the GIL, so no lock on the hot path.
        return self._manifest

    def listen(self, listener: Listener) -> None:
        with self._replacing:
            self._listeners.append(listener)

    def replace(self, new: Manifest) -> Manifest:
        """Make ``new`` the manifest every reader sees from now on; returns the old one."""
        with self._replacing:
            old, self._manifest = self._manifest, new
            for listener in list(self._listeners):
                listener(old, new)
            return old
