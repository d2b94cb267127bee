import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    KIND_ACTOR: _ClassVar[Kind]
    KIND_TECHNIQUE: _ClassVar[Kind]
    KIND_OBSERVABLE_SET: _ClassVar[Kind]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_ACTIVE: _ClassVar[Status]
    STATUS_RETRACTED: _ClassVar[Status]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_SEEN: _ClassVar[Verdict]
    VERDICT_CONFIRMED: _ClassVar[Verdict]
    VERDICT_FALSE_POSITIVE: _ClassVar[Verdict]
    VERDICT_RELAYED: _ClassVar[Verdict]
KIND_UNSPECIFIED: Kind
KIND_ACTOR: Kind
KIND_TECHNIQUE: Kind
KIND_OBSERVABLE_SET: Kind
STATUS_UNSPECIFIED: Status
STATUS_ACTIVE: Status
STATUS_RETRACTED: Status
VERDICT_UNSPECIFIED: Verdict
VERDICT_SEEN: Verdict
VERDICT_CONFIRMED: Verdict
VERDICT_FALSE_POSITIVE: Verdict
VERDICT_RELAYED: Verdict

class RecordRef(_message.Message):
    __slots__ = ("originator", "record_id")
    ORIGINATOR_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    originator: str
    record_id: str
    def __init__(self, originator: _Optional[str] = ..., record_id: _Optional[str] = ...) -> None: ...

class Marking(_message.Message):
    __slots__ = ("classification", "releasable_to", "tlp", "caveats")
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    RELEASABLE_TO_FIELD_NUMBER: _ClassVar[int]
    TLP_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    classification: str
    releasable_to: _containers.RepeatedScalarFieldContainer[str]
    tlp: str
    caveats: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, classification: _Optional[str] = ..., releasable_to: _Optional[_Iterable[str]] = ..., tlp: _Optional[str] = ..., caveats: _Optional[_Iterable[str]] = ...) -> None: ...

class Observable(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Validity(_message.Message):
    __slots__ = ("not_before", "not_after")
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    not_before: _timestamp_pb2.Timestamp
    not_after: _timestamp_pb2.Timestamp
    def __init__(self, not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordDraft(_message.Message):
    __slots__ = ("kind", "title", "summary", "countries", "sectors", "observables", "related", "confidence", "validity", "tags", "marking", "translations")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    COUNTRIES_FIELD_NUMBER: _ClassVar[int]
    SECTORS_FIELD_NUMBER: _ClassVar[int]
    OBSERVABLES_FIELD_NUMBER: _ClassVar[int]
    RELATED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    MARKING_FIELD_NUMBER: _ClassVar[int]
    TRANSLATIONS_FIELD_NUMBER: _ClassVar[int]
    kind: Kind
    title: str
    summary: str
    countries: _containers.RepeatedScalarFieldContainer[str]
    sectors: _containers.RepeatedScalarFieldContainer[str]
    observables: _containers.RepeatedCompositeFieldContainer[Observable]
    related: _containers.RepeatedCompositeFieldContainer[RecordRef]
    confidence: int
    validity: Validity
    tags: _containers.RepeatedScalarFieldContainer[str]
    marking: Marking
    translations: _containers.RepeatedCompositeFieldContainer[Translation]
    def __init__(self, kind: _Optional[_Union[Kind, str]] = ..., title: _Optional[str] = ..., summary: _Optional[str] = ..., countries: _Optional[_Iterable[str]] = ..., sectors: _Optional[_Iterable[str]] = ..., observables: _Optional[_Iterable[_Union[Observable, _Mapping]]] = ..., related: _Optional[_Iterable[_Union[RecordRef, _Mapping]]] = ..., confidence: _Optional[int] = ..., validity: _Optional[_Union[Validity, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., marking: _Optional[_Union[Marking, _Mapping]] = ..., translations: _Optional[_Iterable[_Union[Translation, _Mapping]]] = ...) -> None: ...

class Translation(_message.Message):
    __slots__ = ("language", "title", "summary")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    language: str
    title: str
    summary: str
    def __init__(self, language: _Optional[str] = ..., title: _Optional[str] = ..., summary: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("ref", "version", "status", "created_at", "issued_at", "content", "retraction_reason")
    REF_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    RETRACTION_REASON_FIELD_NUMBER: _ClassVar[int]
    ref: RecordRef
    version: int
    status: Status
    created_at: _timestamp_pb2.Timestamp
    issued_at: _timestamp_pb2.Timestamp
    content: RecordDraft
    retraction_reason: str
    def __init__(self, ref: _Optional[_Union[RecordRef, _Mapping]] = ..., version: _Optional[int] = ..., status: _Optional[_Union[Status, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., content: _Optional[_Union[RecordDraft, _Mapping]] = ..., retraction_reason: _Optional[str] = ...) -> None: ...

class Withdrawal(_message.Message):
    __slots__ = ("ref", "version", "issued_at")
    REF_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    ref: RecordRef
    version: int
    issued_at: _timestamp_pb2.Timestamp
    def __init__(self, ref: _Optional[_Union[RecordRef, _Mapping]] = ..., version: _Optional[int] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("payload_type", "payload", "key_id", "signature")
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload_type: str
    payload: bytes
    key_id: str
    signature: bytes
    def __init__(self, payload_type: _Optional[str] = ..., payload: _Optional[bytes] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class HeldRecord(_message.Message):
    __slots__ = ("envelope", "received_from", "received_at", "equivocated", "sightings")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FROM_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    EQUIVOCATED_FIELD_NUMBER: _ClassVar[int]
    SIGHTINGS_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    received_from: str
    received_at: _timestamp_pb2.Timestamp
    equivocated: bool
    sightings: SightingCounts
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., received_from: _Optional[str] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., equivocated: _Optional[bool] = ..., sightings: _Optional[_Union[SightingCounts, _Mapping]] = ...) -> None: ...

class Sighting(_message.Message):
    __slots__ = ("sighting_id", "reporter", "reported_by", "ref", "record_version", "verdict", "note", "observed_at", "reported_at", "releasable_to", "holder")
    SIGHTING_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    REPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    RECORD_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    RELEASABLE_TO_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    sighting_id: str
    reporter: str
    reported_by: str
    ref: RecordRef
    record_version: int
    verdict: Verdict
    note: str
    observed_at: _timestamp_pb2.Timestamp
    reported_at: _timestamp_pb2.Timestamp
    releasable_to: _containers.RepeatedScalarFieldContainer[str]
    holder: str
    def __init__(self, sighting_id: _Optional[str] = ..., reporter: _Optional[str] = ..., reported_by: _Optional[str] = ..., ref: _Optional[_Union[RecordRef, _Mapping]] = ..., record_version: _Optional[int] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., note: _Optional[str] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., releasable_to: _Optional[_Iterable[str]] = ..., holder: _Optional[str] = ...) -> None: ...

class SightingCounts(_message.Message):
    __slots__ = ("seen", "confirmed", "false_positive")
    SEEN_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVE_FIELD_NUMBER: _ClassVar[int]
    seen: int
    confirmed: int
    false_positive: int
    def __init__(self, seen: _Optional[int] = ..., confirmed: _Optional[int] = ..., false_positive: _Optional[int] = ...) -> None: ...
