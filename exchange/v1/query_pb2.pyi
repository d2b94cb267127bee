import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from exchange.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: _records_pb2.RecordRef
    def __init__(self, ref: _Optional[_Union[_records_pb2.RecordRef, _Mapping]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _records_pb2.HeldRecord
    def __init__(self, record: _Optional[_Union[_records_pb2.HeldRecord, _Mapping]] = ...) -> None: ...

class ObservableQuery(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("kinds", "originators", "countries", "sectors", "observable", "text", "issued_after", "issued_before", "page_size", "page_token", "include_retracted", "from_partners", "include_expired", "min_confidence")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    ORIGINATORS_FIELD_NUMBER: _ClassVar[int]
    COUNTRIES_FIELD_NUMBER: _ClassVar[int]
    SECTORS_FIELD_NUMBER: _ClassVar[int]
    OBSERVABLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AFTER_FIELD_NUMBER: _ClassVar[int]
    ISSUED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RETRACTED_FIELD_NUMBER: _ClassVar[int]
    FROM_PARTNERS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[_records_pb2.Kind]
    originators: _containers.RepeatedScalarFieldContainer[str]
    countries: _containers.RepeatedScalarFieldContainer[str]
    sectors: _containers.RepeatedScalarFieldContainer[str]
    observable: ObservableQuery
    text: str
    issued_after: _timestamp_pb2.Timestamp
    issued_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    include_retracted: bool
    from_partners: bool
    include_expired: bool
    min_confidence: int
    def __init__(self, kinds: _Optional[_Iterable[_Union[_records_pb2.Kind, str]]] = ..., originators: _Optional[_Iterable[str]] = ..., countries: _Optional[_Iterable[str]] = ..., sectors: _Optional[_Iterable[str]] = ..., observable: _Optional[_Union[ObservableQuery, _Mapping]] = ..., text: _Optional[str] = ..., issued_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., issued_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_retracted: _Optional[bool] = ..., from_partners: _Optional[bool] = ..., include_expired: _Optional[bool] = ..., min_confidence: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_records_pb2.HeldRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[_records_pb2.HeldRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
