from exchange.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PullRequest(_message.Message):
    __slots__ = ("cursor", "max_entries", "only", "manifest_version")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ONLY_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    cursor: bytes
    max_entries: int
    only: _containers.RepeatedCompositeFieldContainer[Bucket]
    manifest_version: int
    def __init__(self, cursor: _Optional[bytes] = ..., max_entries: _Optional[int] = ..., only: _Optional[_Iterable[_Union[Bucket, _Mapping]]] = ..., manifest_version: _Optional[int] = ...) -> None: ...

class Bucket(_message.Message):
    __slots__ = ("originator", "bucket_prefix")
    ORIGINATOR_FIELD_NUMBER: _ClassVar[int]
    BUCKET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    originator: str
    bucket_prefix: str
    def __init__(self, originator: _Optional[str] = ..., bucket_prefix: _Optional[str] = ...) -> None: ...

class PullResponse(_message.Message):
    __slots__ = ("entries", "cursor")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_records_pb2.Envelope]
    cursor: bytes
    def __init__(self, entries: _Optional[_Iterable[_Union[_records_pb2.Envelope, _Mapping]]] = ..., cursor: _Optional[bytes] = ...) -> None: ...

class DigestRequest(_message.Message):
    __slots__ = ("originator", "bucket_prefix", "list_entries")
    ORIGINATOR_FIELD_NUMBER: _ClassVar[int]
    BUCKET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIST_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    originator: str
    bucket_prefix: str
    list_entries: bool
    def __init__(self, originator: _Optional[str] = ..., bucket_prefix: _Optional[str] = ..., list_entries: _Optional[bool] = ...) -> None: ...

class DigestEntry(_message.Message):
    __slots__ = ("originator", "record_id", "version", "content_hash")
    ORIGINATOR_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    originator: str
    record_id: str
    version: int
    content_hash: bytes
    def __init__(self, originator: _Optional[str] = ..., record_id: _Optional[str] = ..., version: _Optional[int] = ..., content_hash: _Optional[bytes] = ...) -> None: ...

class DigestSummary(_message.Message):
    __slots__ = ("originator", "bucket_prefix", "count", "hash")
    ORIGINATOR_FIELD_NUMBER: _ClassVar[int]
    BUCKET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    originator: str
    bucket_prefix: str
    count: int
    hash: bytes
    def __init__(self, originator: _Optional[str] = ..., bucket_prefix: _Optional[str] = ..., count: _Optional[int] = ..., hash: _Optional[bytes] = ...) -> None: ...

class DigestResponse(_message.Message):
    __slots__ = ("summaries", "cursor", "entries")
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    summaries: _containers.RepeatedCompositeFieldContainer[DigestSummary]
    cursor: bytes
    entries: _containers.RepeatedCompositeFieldContainer[DigestEntry]
    def __init__(self, summaries: _Optional[_Iterable[_Union[DigestSummary, _Mapping]]] = ..., cursor: _Optional[bytes] = ..., entries: _Optional[_Iterable[_Union[DigestEntry, _Mapping]]] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("have_version",)
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    have_version: int
    def __init__(self, have_version: _Optional[int] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("documents", "current_version")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedScalarFieldContainer[bytes]
    current_version: int
    def __init__(self, documents: _Optional[_Iterable[bytes]] = ..., current_version: _Optional[int] = ...) -> None: ...
