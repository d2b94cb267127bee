"""Storage: the append-only log, the current version of each record, indexes, audit.

``Store`` opens a database and is the one way to write to it (``Store.write``); the
modules of this package read and write what it holds, one concern each (see
``exchange.store.store``).
"""

from exchange.store.current import StoredRecord
from exchange.store.search import SearchFilter
from exchange.store.store import Store

__all__ = ["SearchFilter", "Store", "StoredRecord"]
