from exchange.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitRequest(_message.Message):
    __slots__ = ("draft", "reference")
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    draft: _records_pb2.RecordDraft
    reference: str
    def __init__(self, draft: _Optional[_Union[_records_pb2.RecordDraft, _Mapping]] = ..., reference: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: Receipt
    def __init__(self, receipt: _Optional[_Union[Receipt, _Mapping]] = ...) -> None: ...

class SubmitBulkRequest(_message.Message):
    __slots__ = ("submissions",)
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    submissions: _containers.RepeatedCompositeFieldContainer[SubmitRequest]
    def __init__(self, submissions: _Optional[_Iterable[_Union[SubmitRequest, _Mapping]]] = ...) -> None: ...

class SubmitBulkResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitBulkResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitBulkResult, _Mapping]]] = ...) -> None: ...

class SubmitBulkResult(_message.Message):
    __slots__ = ("receipt", "refusal")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    receipt: Receipt
    refusal: str
    def __init__(self, receipt: _Optional[_Union[Receipt, _Mapping]] = ..., refusal: _Optional[str] = ...) -> None: ...

class ReviseRequest(_message.Message):
    __slots__ = ("ref", "base_version", "draft")
    REF_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    ref: _records_pb2.RecordRef
    base_version: int
    draft: _records_pb2.RecordDraft
    def __init__(self, ref: _Optional[_Union[_records_pb2.RecordRef, _Mapping]] = ..., base_version: _Optional[int] = ..., draft: _Optional[_Union[_records_pb2.RecordDraft, _Mapping]] = ...) -> None: ...

class ReviseResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: Receipt
    def __init__(self, receipt: _Optional[_Union[Receipt, _Mapping]] = ...) -> None: ...

class RetractRequest(_message.Message):
    __slots__ = ("ref", "base_version", "reason")
    REF_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ref: _records_pb2.RecordRef
    base_version: int
    reason: str
    def __init__(self, ref: _Optional[_Union[_records_pb2.RecordRef, _Mapping]] = ..., base_version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RetractResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: Receipt
    def __init__(self, receipt: _Optional[_Union[Receipt, _Mapping]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("ref", "version", "content_hash", "created", "held_draft_id", "approvals_needed")
    REF_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    HELD_DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    ref: _records_pb2.RecordRef
    version: int
    content_hash: bytes
    created: bool
    held_draft_id: str
    approvals_needed: int
    def __init__(self, ref: _Optional[_Union[_records_pb2.RecordRef, _Mapping]] = ..., version: _Optional[int] = ..., content_hash: _Optional[bytes] = ..., created: _Optional[bool] = ..., held_draft_id: _Optional[str] = ..., approvals_needed: _Optional[int] = ...) -> None: ...
