import datetime

from exchange.v1 import records_pb2 as _records_pb2
from exchange.v1 import submission_pb2 as _submission_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DraftState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRAFT_STATE_UNSPECIFIED: _ClassVar[DraftState]
    DRAFT_STATE_HELD: _ClassVar[DraftState]
    DRAFT_STATE_RELEASED: _ClassVar[DraftState]
    DRAFT_STATE_REJECTED: _ClassVar[DraftState]
DRAFT_STATE_UNSPECIFIED: DraftState
DRAFT_STATE_HELD: DraftState
DRAFT_STATE_RELEASED: DraftState
DRAFT_STATE_REJECTED: DraftState

class Approval(_message.Message):
    __slots__ = ("officer", "at")
    OFFICER_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    officer: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, officer: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HeldDraft(_message.Message):
    __slots__ = ("draft_id", "ref", "base_version", "author", "draft", "approvals_needed", "approvals", "state", "rule", "reason", "submitted_at", "released_version", "released_marking")
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    RELEASED_VERSION_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MARKING_FIELD_NUMBER: _ClassVar[int]
    draft_id: str
    ref: _records_pb2.RecordRef
    base_version: int
    author: str
    draft: _records_pb2.RecordDraft
    approvals_needed: int
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    state: DraftState
    rule: str
    reason: str
    submitted_at: _timestamp_pb2.Timestamp
    released_version: int
    released_marking: _records_pb2.Marking
    def __init__(self, draft_id: _Optional[str] = ..., ref: _Optional[_Union[_records_pb2.RecordRef, _Mapping]] = ..., base_version: _Optional[int] = ..., author: _Optional[str] = ..., draft: _Optional[_Union[_records_pb2.RecordDraft, _Mapping]] = ..., approvals_needed: _Optional[int] = ..., approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., state: _Optional[_Union[DraftState, str]] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., released_version: _Optional[int] = ..., released_marking: _Optional[_Union[_records_pb2.Marking, _Mapping]] = ...) -> None: ...

class ListDraftsRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class ListDraftsResponse(_message.Message):
    __slots__ = ("drafts",)
    DRAFTS_FIELD_NUMBER: _ClassVar[int]
    drafts: _containers.RepeatedCompositeFieldContainer[HeldDraft]
    def __init__(self, drafts: _Optional[_Iterable[_Union[HeldDraft, _Mapping]]] = ...) -> None: ...

class GetDraftRequest(_message.Message):
    __slots__ = ("draft_id",)
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    draft_id: str
    def __init__(self, draft_id: _Optional[str] = ...) -> None: ...

class GetDraftResponse(_message.Message):
    __slots__ = ("draft",)
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    draft: HeldDraft
    def __init__(self, draft: _Optional[_Union[HeldDraft, _Mapping]] = ...) -> None: ...

class ApproveDraftRequest(_message.Message):
    __slots__ = ("draft_id",)
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    draft_id: str
    def __init__(self, draft_id: _Optional[str] = ...) -> None: ...

class ApproveDraftResponse(_message.Message):
    __slots__ = ("draft", "receipt")
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    draft: HeldDraft
    receipt: _submission_pb2.Receipt
    def __init__(self, draft: _Optional[_Union[HeldDraft, _Mapping]] = ..., receipt: _Optional[_Union[_submission_pb2.Receipt, _Mapping]] = ...) -> None: ...

class RejectDraftRequest(_message.Message):
    __slots__ = ("draft_id", "reason")
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    draft_id: str
    reason: str
    def __init__(self, draft_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectDraftResponse(_message.Message):
    __slots__ = ("draft",)
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    draft: HeldDraft
    def __init__(self, draft: _Optional[_Union[HeldDraft, _Mapping]] = ...) -> None: ...
