import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from exchange.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DisclosuresRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: _records_pb2.RecordRef
    def __init__(self, ref: _Optional[_Union[_records_pb2.RecordRef, _Mapping]] = ...) -> None: ...

class Disclosure(_message.Message):
    __slots__ = ("partner", "version", "at", "withdrawal", "audit_seq")
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWAL_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    partner: str
    version: int
    at: _timestamp_pb2.Timestamp
    withdrawal: bool
    audit_seq: int
    def __init__(self, partner: _Optional[str] = ..., version: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., withdrawal: _Optional[bool] = ..., audit_seq: _Optional[int] = ...) -> None: ...

class DisclosuresResponse(_message.Message):
    __slots__ = ("disclosures", "truncated", "current_version", "marking", "relayed")
    DISCLOSURES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MARKING_FIELD_NUMBER: _ClassVar[int]
    RELAYED_FIELD_NUMBER: _ClassVar[int]
    disclosures: _containers.RepeatedCompositeFieldContainer[Disclosure]
    truncated: bool
    current_version: int
    marking: _records_pb2.Marking
    relayed: _containers.RepeatedCompositeFieldContainer[RelayedHolder]
    def __init__(self, disclosures: _Optional[_Iterable[_Union[Disclosure, _Mapping]]] = ..., truncated: _Optional[bool] = ..., current_version: _Optional[int] = ..., marking: _Optional[_Union[_records_pb2.Marking, _Mapping]] = ..., relayed: _Optional[_Iterable[_Union[RelayedHolder, _Mapping]]] = ...) -> None: ...

class RelayedHolder(_message.Message):
    __slots__ = ("holder", "via", "source", "at")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    holder: str
    via: str
    source: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, holder: _Optional[str] = ..., via: _Optional[str] = ..., source: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchEntry(_message.Message):
    __slots__ = ("id", "type", "value", "keys", "created_at", "notify")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    id: int
    type: str
    value: str
    keys: _containers.RepeatedCompositeFieldContainer[_records_pb2.Observable]
    created_at: _timestamp_pb2.Timestamp
    notify: str
    def __init__(self, id: _Optional[int] = ..., type: _Optional[str] = ..., value: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[_records_pb2.Observable, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., notify: _Optional[str] = ...) -> None: ...

class WatchAddRequest(_message.Message):
    __slots__ = ("type", "value", "notify")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    notify: str
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ..., notify: _Optional[str] = ...) -> None: ...

class WatchAddResponse(_message.Message):
    __slots__ = ("entry", "created")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    entry: WatchEntry
    created: bool
    def __init__(self, entry: _Optional[_Union[WatchEntry, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class WatchRemoveRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class WatchRemoveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchListResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[WatchEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[WatchEntry, _Mapping]]] = ...) -> None: ...

class WatchHitsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "received_after", "include_expired", "unseen")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AFTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    UNSEEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    received_after: _timestamp_pb2.Timestamp
    include_expired: bool
    unseen: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., received_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., include_expired: _Optional[bool] = ..., unseen: _Optional[bool] = ...) -> None: ...

class WatchHit(_message.Message):
    __slots__ = ("record", "watch_ids", "seen")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    WATCH_IDS_FIELD_NUMBER: _ClassVar[int]
    SEEN_FIELD_NUMBER: _ClassVar[int]
    record: _records_pb2.HeldRecord
    watch_ids: _containers.RepeatedScalarFieldContainer[int]
    seen: bool
    def __init__(self, record: _Optional[_Union[_records_pb2.HeldRecord, _Mapping]] = ..., watch_ids: _Optional[_Iterable[int]] = ..., seen: _Optional[bool] = ...) -> None: ...

class WatchHitsResponse(_message.Message):
    __slots__ = ("hits", "next_page_token")
    HITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[WatchHit]
    next_page_token: str
    def __init__(self, hits: _Optional[_Iterable[_Union[WatchHit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchSeenRequest(_message.Message):
    __slots__ = ("refs", "all")
    REFS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedCompositeFieldContainer[_records_pb2.RecordRef]
    all: bool
    def __init__(self, refs: _Optional[_Iterable[_Union[_records_pb2.RecordRef, _Mapping]]] = ..., all: _Optional[bool] = ...) -> None: ...

class WatchSeenResponse(_message.Message):
    __slots__ = ("marked",)
    MARKED_FIELD_NUMBER: _ClassVar[int]
    marked: int
    def __init__(self, marked: _Optional[int] = ...) -> None: ...

class ReportSightingRequest(_message.Message):
    __slots__ = ("ref", "verdict", "note", "observed_at", "releasable_to")
    REF_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    RELEASABLE_TO_FIELD_NUMBER: _ClassVar[int]
    ref: _records_pb2.RecordRef
    verdict: _records_pb2.Verdict
    note: str
    observed_at: _timestamp_pb2.Timestamp
    releasable_to: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ref: _Optional[_Union[_records_pb2.RecordRef, _Mapping]] = ..., verdict: _Optional[_Union[_records_pb2.Verdict, str]] = ..., note: _Optional[str] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., releasable_to: _Optional[_Iterable[str]] = ...) -> None: ...

class ReportSightingResponse(_message.Message):
    __slots__ = ("sighting",)
    SIGHTING_FIELD_NUMBER: _ClassVar[int]
    sighting: _records_pb2.Sighting
    def __init__(self, sighting: _Optional[_Union[_records_pb2.Sighting, _Mapping]] = ...) -> None: ...

class SightingsRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: _records_pb2.RecordRef
    def __init__(self, ref: _Optional[_Union[_records_pb2.RecordRef, _Mapping]] = ...) -> None: ...

class SightingsResponse(_message.Message):
    __slots__ = ("sightings",)
    SIGHTINGS_FIELD_NUMBER: _ClassVar[int]
    sightings: _containers.RepeatedCompositeFieldContainer[_records_pb2.Sighting]
    def __init__(self, sightings: _Optional[_Iterable[_Union[_records_pb2.Sighting, _Mapping]]] = ...) -> None: ...
