"""Reports as DICOM Structured Reports: the AI draft and each signed version, for the PACS.

One Comprehensive SR document (SOP class 1.2.840.10008.5.1.4.1.1.88.33) per report version, built
with highdicom (which writes and checks the SR modules) in the study of the images it reports on,
in one SR series of its own per study. Comprehensive rather than Basic Text SR: highdicom builds
and validates it (it has no Basic Text SR class), it carries the device observer context (TID 1004)
that names the model, and every PACS and `dsrdump` reads it; its content is the one of a Basic
Text SR (TID 2000 "Basic Diagnostic Imaging Report": headings with narrative text), so viewers that
render text reports show it as such.

Content tree (TID 2000 layout)::

    CONTAINER (18748-4, LN, "Diagnostic imaging report")
      HAS OBS CONTEXT  observer: the model (device UID, name, version) [and the signing person]
      CONTAINS CONTAINER (121070, DCM, "Findings")    -> TEXT (121071, DCM, "Finding")
      CONTAINS CONTAINER (121072, DCM, "Impressions") -> TEXT (121073, DCM, "Impression")
      CONTAINS TEXT (121106, DCM, "Comment")          the AI-draft notice (drafts only)

Flags by version:

    draft      CompletionFlag PARTIAL,  PreliminaryFlag PRELIMINARY, VerificationFlag UNVERIFIED
    signed     CompletionFlag COMPLETE, PreliminaryFlag FINAL,       VerificationFlag VERIFIED
               + VerifyingObserverSequence (printed name, organisation, date-time of signature)
               + PredecessorDocumentsSequence -> the draft (first signature) or the previous
                 signed version (an amendment)

UIDs are derived from the study and the version's own key (`uid_key`), so building the same
version twice gives the same SOP Instance UID: a re-sent report replaces itself in the PACS
instead of appearing twice.

Character set: the narrowest that holds every text of the document (report text, names, the
patient and study attributes copied from the images): none (ASCII, the default repertoire),
ISO_IR 100 (Latin-1), else ISO_IR 192 (UTF-8). Without it a "≥", "µ" or "Müller" would be
written as "?".
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import highdicom as hd
from highdicom.sr import (
    CodedConcept,
    ComprehensiveSR,
    ContainerContentItem,
    DeviceObserverIdentifyingAttributes,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DT

REPORT_TITLE = CodedConcept("18748-4", "LN", "Diagnostic imaging report")
FINDINGS = CodedConcept("121070", "DCM", "Findings")
FINDING = CodedConcept("121071", "DCM", "Finding")
IMPRESSIONS = CodedConcept("121072", "DCM", "Impressions")
IMPRESSION = CodedConcept("121073", "DCM", "Impression")
COMMENT = CodedConcept("121106", "DCM", "Comment")

SR_SERIES_NUMBER = 9000  # an SR series of its own, sorted after the images in viewers
SERIES_DESCRIPTION = "AI report drafts and signed reports (radreport)"
DRAFT_NOTICE = ("AI-generated draft ({model}). Not reviewed by a radiologist; not for diagnosis "
                "until signed.")
# The Type 2 attributes of the patient and study modules that highdicom copies from the images.
_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
           "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")


class SRError(ValueError):
    """A report cannot be written as DICOM SR (no images to attach it to, a bad name)."""


@dataclass(frozen=True)
class ReportSections:
    """The text of a report: FINDINGS and IMPRESSION (either may be empty, not both)."""

    findings: str
    impression: str


@dataclass(frozen=True)
class AlgorithmDevice:
    """The model that drafted a report: its name (the bundle), version and a stable device UID
    (a new UID for every new model, as IHE AIR asks)."""

    name: str
    version: str
    uid: str
    manufacturer: str = "radreport"

    @classmethod
    def for_bundle(cls, name: str, version: str) -> AlgorithmDevice:
        """A device whose UID is derived from the bundle's name and version."""
        return cls(name=name, version=version,
                   uid=generate_uid(entropy_srcs=["radreport-device", name, version]))


@dataclass(frozen=True)
class Signature:
    """Who signed a report version, for which organisation, and when (timezone-aware)."""

    printed_name: str  # DICOM PN form, e.g. "Lovelace^Ada"
    organization: str
    signed_at: dt.datetime


def sr_series_uid(study_uid: str) -> str:
    """The UID of a study's report series (the same for every version)."""
    return generate_uid(entropy_srcs=["radreport-sr-series", study_uid])


def draft_sr(evidence: Sequence[Dataset], sections: ReportSections, device: AlgorithmDevice, *,
             uid_key: str, created_at: dt.datetime, instance_number: int = 1) -> Dataset:
    """The AI draft as a PARTIAL / PRELIMINARY / UNVERIFIED SR in the study of `evidence`.

    evidence: the headers of the images the draft reports on (one study; pixels not needed).
    uid_key: what identifies this version (e.g. the draft's id): same key, same SOP Instance UID.
    """
    content = _content(sections, device, notice=DRAFT_NOTICE.format(model=device.name))
    return _document(evidence, content, device, uid_key=uid_key, when=created_at,
                     instance_number=instance_number)


def signed_sr(evidence: Sequence[Dataset], sections: ReportSections, device: AlgorithmDevice,
              signature: Signature, predecessor: Dataset, *, uid_key: str,
              instance_number: int) -> Dataset:
    """A signed version as a COMPLETE / FINAL / VERIFIED SR whose predecessor is `predecessor`
    (the draft SR at the first signature, the previous signed SR for an amendment)."""
    content = _content(sections, device, signer=signature)
    return _document(evidence, content, device, uid_key=uid_key, when=signature.signed_at,
                     instance_number=instance_number, signature=signature,
                     predecessor=predecessor)


def _content(sections: ReportSections, device: AlgorithmDevice, *, notice: str | None = None,
             signer: Signature | None = None) -> ContainerContentItem:
    if not (sections.findings.strip() or sections.impression.strip()):
        raise SRError("a report needs FINDINGS or IMPRESSION text to be written as DICOM SR")
    root = ContainerContentItem(name=REPORT_TITLE, is_content_continuous=False, template_id="2000")
    items = []
    if signer is not None:
        items.extend(ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=PersonObserverIdentifyingAttributes(
                name=signer.printed_name, organization_name=signer.organization)))
    items.extend(ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=device.uid, name=device.name, manufacturer_name=device.manufacturer,
            model_name=device.version)))
    for heading, concept, text in ((FINDINGS, FINDING, sections.findings),
                                   (IMPRESSIONS, IMPRESSION, sections.impression)):
        if text.strip():
            section = ContainerContentItem(name=heading, relationship_type="CONTAINS")
            section.ContentSequence = [TextContentItem(name=concept, value=text.strip(),
                                                       relationship_type="CONTAINS")]
            items.append(section)
    if notice is not None:
        items.append(TextContentItem(name=COMMENT, value=notice, relationship_type="CONTAINS"))
    root.ContentSequence = items
    return root


def _evidence(evidence: Sequence[Dataset]) -> list[Dataset]:
    if not evidence:
        raise SRError("a report SR needs the headers of at least one image of its study")
    studies = {str(ds.StudyInstanceUID) for ds in evidence}
    if len(studies) != 1:
        raise SRError(f"the images of a report SR must belong to one study, not {len(studies)}")
    out = []
    for ds in evidence:
        header = Dataset()
        for element in ds:
            if element.tag != 0x7FE00010:  # no pixels
                header.add(copy.deepcopy(element))
        for keyword in _COPIED:
            if keyword not in header:
                setattr(header, keyword, None)
        out.append(header)
    return out


#: Value representations holding text that the Specific Character Set applies to.
_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})


def character_set(texts: Iterable[str]) -> str | None:
    """The narrowest Specific Character Set for `texts`: None (ASCII), "ISO_IR 100" (Latin-1) or
    "ISO_IR 192" (UTF-8)."""
    joined = "".join(texts)
    if joined.isascii():
        return None
    try:
        joined.encode("latin-1")
    except UnicodeEncodeError:
        return "ISO_IR 192"
    return "ISO_IR 100"


def _texts(*datasets: Dataset) -> Iterator[str]:
    for ds in datasets:
        for element in ds.iterall():
            if element.VR in _TEXT_VRS and element.value is not None:
                values = element.value if element.VM > 1 else [element.value]
                yield from (str(value) for value in values)


def _document(evidence: Sequence[Dataset], content: ContainerContentItem,
              device: AlgorithmDevice, *, uid_key: str, when: dt.datetime,
              instance_number: int, signature: Signature | None = None,
              predecessor: Dataset | None = None) -> Dataset:
    images = _evidence(evidence)
    people = [] if signature is None else [signature.printed_name, signature.organization]
    charset = character_set([*_texts(content, images[0]), *people, device.name, device.version,
                             device.manufacturer])
    study_uid = str(images[0].StudyInstanceUID)
    equipment = hd.ContributingEquipment(
        manufacturer=device.manufacturer, purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=device.name, software_versions=device.version,
        contribution_description="Report text drafted by a vision-language model")
    try:
        sr = ComprehensiveSR(
            evidence=images, content=content, series_instance_uid=sr_series_uid(study_uid),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=generate_uid(entropy_srcs=["radreport-sr", study_uid, uid_key]),
            instance_number=instance_number, manufacturer=device.manufacturer,
            is_complete=signature is not None, is_final=signature is not None,
            is_verified=signature is not None,
            verifying_observer_name=None if signature is None else signature.printed_name,
            verifying_organization=None if signature is None else signature.organization,
            previous_versions=None if predecessor is None else [predecessor],
            contributing_equipment=[equipment], series_description=SERIES_DESCRIPTION,
            specific_character_set=charset)
    except ValueError as error:
        raise SRError(f"the report cannot be written as DICOM SR: {error}") from error
    stamp = DT(when)
    sr.ContentDate, sr.ContentTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    if signature is not None:
        sr.VerifyingObserverSequence[0].VerificationDateTime = stamp
    return sr
