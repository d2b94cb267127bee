"""Storage: the append-only log, the current version of each record, indexes, audit."""

from exchange.store.store import SearchFilter, Store, StoredRecord

__all__ = ["SearchFilter", "Store", "StoredRecord"]
