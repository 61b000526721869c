"""QIDO-RS (PS3.18 10.6): search studies, series and instances in the index, answer DICOM JSON.

Matching keys, by keyword or by tag (`PatientID` or `00100020`):

    StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, SOPClassUID   a UID list (, or \\)
    PatientID, PatientName, AccessionNumber, StudyDescription, Modality  a value, `*` `?` wildcards
    StudyDate                                                           YYYYMMDD, A-B, -B or A-
    ModalitiesInStudy                                                   any of a list (CR,DX)
    SeriesNumber, InstanceNumber                                        a number

`limit` (at most MAX_LIMIT) and `offset` page over the results of the level asked for (studies
for /studies); `includefield` adds attributes (keywords or tags, or `all`) taken from the stored
header of the first instance. Results are ordered by StudyDate (newest first), then UID. A DICOM
attribute that is not a matching key is ignored and named in a `Warning: 299` header, as PS3.18
allows; a parameter that is not a DICOM attribute is an error (400).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import Select, and_, desc, func, select
from sqlalchemy.orm import Session

from service.core.errors import ServiceError
from service.core.models import IndexedInstance as Row
from service.dicomweb.wado import instance_url, with_bulkdata_uris

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
LEVELS = ("study", "series", "instance")
DATE_RE = re.compile(r"^\d{8}$")


class QueryError(ServiceError):
    """A QIDO-RS query that cannot be answered (400) with what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400, code="bad_query")


# keyword -> (column, kind); kinds: uid (list), text (wildcards), date (range), number.
MATCHING: dict[str, tuple[Any, str]] = {
    "StudyInstanceUID": (Row.study_uid, "uid"),
    "SeriesInstanceUID": (Row.series_uid, "uid"),
    "SOPInstanceUID": (Row.sop_uid, "uid"),
    "SOPClassUID": (Row.sop_class_uid, "uid"),
    "PatientID": (Row.patient_id, "text"),
    "PatientName": (Row.patient_name, "text"),
    "AccessionNumber": (Row.accession_number, "text"),
    "StudyDescription": (Row.study_description, "text"),
    "Modality": (Row.modality, "text"),
    "StudyDate": (Row.study_date, "date"),
    "SeriesNumber": (Row.series_number, "number"),
    "InstanceNumber": (Row.instance_number, "number"),
    "ModalitiesInStudy": (Row.modality, "modalities"),
}

#: Attributes every result of a level carries (PS3.18 Table 10.6.3-3..5, those we index).
STUDY_KEYS = ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "PatientName",
              "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
              "StudyDescription")
SERIES_KEYS = ("Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription")
INSTANCE_KEYS = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns")


@dataclass
class Query:
    """A parsed QIDO-RS request."""

    level: str
    filters: list[Any] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    include: set[str] = field(default_factory=set)  # tags as 8-hex strings
    include_all: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    ignored: list[str] = field(default_factory=list)


def tag_of(name: str) -> str:
    """The 8-hex-digit tag of a keyword or of a tag given as hex; QueryError otherwise."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return name.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise QueryError(f"{name!r} is neither a DICOM keyword nor a tag (e.g. PatientID or "
                         "00100020)")
    return f"{tag:08X}"


def _wildcard(column: Any, value: str) -> Any:
    if "*" not in value and "?" not in value:
        return column == value
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


def _date_filter(column: Any, value: str) -> Any:
    low, _, high = value.strip().partition("-")
    low, high = (low.strip(), high.strip()) if "-" in value else (low.strip(), low.strip())
    for part in (low, high):
        if part and not DATE_RE.match(part):
            raise QueryError(f"StudyDate {part!r} is not YYYYMMDD (a range is A-B, -B or A-)")
    conditions = []
    if low:
        conditions.append(column >= low)
    if high:
        conditions.append(column <= high)
    return and_(*conditions)


def _uids(value: str) -> list[str]:
    return [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]


def _condition(keyword: str, value: str) -> Any:
    column, kind = MATCHING[keyword]
    if kind == "uid":
        return column.in_(_uids(value))
    if kind == "date":
        return _date_filter(column, value)
    if kind == "number":
        try:
            return column == int(value)
        except ValueError:
            raise QueryError(f"{keyword} must be a number") from None
    return _wildcard(column, value)


def parse(level: str, params: list[tuple[str, str]], *, study_uid: str | None = None,
          series_uid: str | None = None) -> Query:
    """A Query from the request's parameters (in order, repeated keys allowed)."""
    query = Query(level)
    if study_uid:
        query.filters.append(Row.study_uid == study_uid)
    if series_uid:
        query.filters.append(Row.series_uid == series_uid)
    for name, value in params:
        if name in ("limit", "offset"):
            try:
                number = int(value)
            except ValueError:
                raise QueryError(f"{name} must be a whole number") from None
            if number < 0:
                raise QueryError(f"{name} must not be negative")
            if name == "limit":
                query.limit = min(number, MAX_LIMIT)
            else:
                query.offset = number
        elif name == "includefield":
            for item in _uids(value):
                if item == "all":
                    query.include_all = True
                else:
                    query.include.add(tag_of(item))
        elif name in ("fuzzymatching", "orderby"):
            query.ignored.append(name)
        else:
            keyword = keyword_for_tag(int(tag_of(name), 16)) or name
            if value == "":
                continue  # an empty value matches everything (universal matching)
            if keyword == "ModalitiesInStudy":
                query.modalities.extend(_uids(value))
            elif keyword in MATCHING:
                query.filters.append(_condition(keyword, value))
            else:
                query.ignored.append(keyword)
    return query


def _study_filter(query: Query) -> Any:
    """Matching at study level: ModalitiesInStudy looks at every instance of the study."""
    conditions = list(query.filters)
    if query.modalities:
        with_modality = select(Row.study_uid).where(Row.modality.in_(query.modalities))
        conditions.append(Row.study_uid.in_(with_modality))
    return and_(*conditions) if conditions else None


def _where(statement: Select, condition: Any) -> Select:
    return statement if condition is None else statement.where(condition)


def search(session: Session, query: Query, base_url: str) -> list[dict[str, Any]]:
    """The DICOM JSON results of a query at its level."""
    condition = _study_filter(query)
    if query.level == "study":
        keys = _where(select(Row.study_uid, func.max(Row.study_date).label("d")), condition)
        keys = keys.group_by(Row.study_uid).order_by(desc("d"), Row.study_uid)
        uids = [u for u, _ in session.execute(keys.offset(query.offset).limit(query.limit))]
        rows = session.scalars(select(Row).where(Row.study_uid.in_(uids))
                               .order_by(Row.series_uid, Row.instance_number, Row.id)).all()
        by_study: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_study[row.study_uid].append(row)
        return [_study_result(by_study[u], query, base_url) for u in uids if by_study[u]]
    if query.level == "series":
        keys = _where(select(Row.study_uid, Row.series_uid, func.max(Row.study_date).label("d"),
                             func.min(Row.series_number).label("n")), condition)
        keys = keys.group_by(Row.study_uid, Row.series_uid).order_by(
            desc("d"), Row.study_uid, "n", Row.series_uid)
        pairs = [(s, r) for s, r, _, _ in
                 session.execute(keys.offset(query.offset).limit(query.limit))]
        series_uids = [r for _, r in pairs]
        rows = session.scalars(select(Row).where(Row.series_uid.in_(series_uids))
                               .order_by(Row.instance_number, Row.id)).all()
        by_series: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_series[row.series_uid].append(row)
        return [_series_result(by_series[r], query, base_url) for _, r in pairs if by_series[r]]
    statement = _where(select(Row), condition).order_by(
        desc(Row.study_date), Row.study_uid, Row.series_uid, Row.instance_number, Row.id)
    rows = session.scalars(statement.offset(query.offset).limit(query.limit)).all()
    return [_instance_result(row, query, base_url) for row in rows]


def _attributes(header: dict[str, Any], keywords: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for keyword in keywords:
        tag = f"{tag_for_keyword(keyword):08X}"
        out[tag] = header.get(tag) or {"vr": dictionary_VR(tag)}
    return out


def _included(header: dict[str, Any], query: Query) -> dict[str, Any]:
    if query.include_all:  # relative BulkDataURIs (study, series level) belong to one instance
        return {tag: value for tag, value in header.items()
                if not str(value.get("BulkDataURI", "")).startswith("bulkdata/")}
    out = {}
    for tag in query.include:
        if tag in header:
            out[tag] = header[tag]
        else:
            try:
                out[tag] = {"vr": dictionary_VR(tag)}
            except KeyError:
                continue
    return out


def _value(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)}


def _study_result(rows: list[Row], query: Query, base_url: str) -> dict[str, Any]:
    first = rows[0]
    result = {**_included(first.header, query), **_attributes(first.header, STUDY_KEYS)}
    modalities = sorted({r.modality for r in rows if r.modality})
    result["00080061"] = _value("CS", *modalities) if modalities else {"vr": "CS"}
    result["00201206"] = _value("IS", len({r.series_uid for r in rows}))
    result["00201208"] = _value("IS", len(rows))
    result["00081190"] = _value("UR", f"{base_url}/studies/{first.study_uid}")
    return result


def _series_result(rows: list[Row], query: Query, base_url: str) -> dict[str, Any]:
    first = rows[0]
    result = {**_included(first.header, query), **_attributes(first.header, SERIES_KEYS)}
    result.update(_attributes(first.header, ("StudyInstanceUID",)))
    result["00201209"] = _value("IS", len(rows))
    result["00081190"] = _value(
        "UR", f"{base_url}/studies/{first.study_uid}/series/{first.series_uid}")
    return result


def _instance_result(row: Row, query: Query, base_url: str) -> dict[str, Any]:
    url = instance_url(base_url, row)
    header = with_bulkdata_uris(row.header, url, row.transfer_syntax_uid)
    result = {**_included(header, query), **_attributes(header, INSTANCE_KEYS)}
    result.update(_attributes(header, ("StudyInstanceUID", "SeriesInstanceUID")))
    result["00081190"] = _value("UR", url)
    return result
