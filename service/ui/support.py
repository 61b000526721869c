"""Routes the review page needs beside the review API: image list, full-resolution render,
findings with spans.

Everything here is read-only and under `/v1/ui` (roles radiologist, admin):

- `GET /v1/ui/config`: window presets (center, width on the decoded 0..1 image, the numbers
  `GET /v1/studies/{id}/images/{n}.png?window=` uses), signature meanings with their text, labels.
- `GET /v1/ui/studies/{id}/images`: the study's decoded images in the index order of the PNG route,
  with view (PA / AP / LATERAL ...), which one the draft was made from, stored and original size.
- `GET /v1/ui/studies/{id}/images/{n}/full.png`: the image decoded again from its DICOM file at the
  original resolution (the PNG route serves the copy capped at IMAGE_CACHE_SIZE).
- `POST /v1/ui/findings`: a text's sections (character ranges) and the findings the RadGraph-style
  extractor finds in it, each with its character span, certainty and the anatomy it is located at.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from service.auth.deps import ERRORS, require, roles_doc
from service.core.deps import SessionDep, StoreDep
from service.core.errors import Problem
from service.core.models import ReportStatus, Role, Study, User
from service.review import workflow
from service.studies.imaging import WINDOW_PRESETS, ImageDecodeError, decode, render_png

router = APIRouter(prefix="/v1/ui", tags=["review page"])

CLINICAL = (Role.radiologist, Role.admin)
#: The signed-in user of a route open to radiologists and admins.
Clinician = Annotated[User, Depends(require(*CLINICAL))]
TEXT_LIMIT = 20000

#: Section headers the page splits the editor by (what `radiology.reports` recognises most often).
SECTION_HEADERS = ("EXAMINATION", "INDICATION", "HISTORY", "CLINICAL HISTORY", "TECHNIQUE",
                   "COMPARISON", "FINDINGS", "IMPRESSION", "RECOMMENDATION", "RECOMMENDATIONS",
                   "ADDENDUM")
# Longest first, so "RECOMMENDATIONS" wins over "RECOMMENDATION".
_HEADER = re.compile(
    r"(?<![\w])(" + "|".join(sorted(map(re.escape, SECTION_HEADERS), key=len, reverse=True))
    + r")[ \t]*:",
    re.IGNORECASE,
)
CERTAINTY = {"OBS-DP": "present", "OBS-DA": "absent", "OBS-U": "uncertain", "ANAT-DP": "anatomy"}


class WindowPreset(BaseModel):
    """A display window over the decoded image (0..1): center and width."""

    name: str
    center: float
    width: float


class Meaning(BaseModel):
    """A signature meaning and the sentence the signer affirms."""

    value: str
    text: str


class PageConfig(BaseModel):
    """What the review page shows in its menus."""

    presets: list[WindowPreset]
    meanings: list[Meaning]
    statuses: list[str]
    sorts: list[str]


class ImageInfo(BaseModel):
    """One decoded image of a study, in the index order of GET /v1/studies/{id}/images/{n}.png."""

    index: int
    view: str | None = Field(description="DICOM ViewPosition as decoded: PA, AP, LATERAL, LL, ...")
    frontal: bool = Field(description="Whether the view is frontal (PA or AP).")
    selected: bool = Field(description="The image the AI draft was made from.")
    rows: int | None = Field(description="Rows of the original DICOM image.")
    columns: int | None


class StudyImages(BaseModel):
    """The decoded images of a study."""

    study_id: str
    images: list[ImageInfo]


class FindingsRequest(BaseModel):
    """A report text to analyse."""

    text: str = Field(max_length=TEXT_LIMIT)


class Section(BaseModel):
    """A section of the text: the header's range and the body's range (character offsets)."""

    name: str
    header_start: int
    body_start: int
    end: int


class Entity(BaseModel):
    """One entity of the graph with its characters in the text."""

    id: str
    text: str
    label: str = Field(description="ANAT-DP, OBS-DP, OBS-U or OBS-DA.")
    certainty: str = Field(description="present, absent, uncertain, or anatomy.")
    start: int
    end: int = Field(description="Offset after the last character.")
    anatomy: list[str] = Field(
        description="Anatomy the observation is located at (located_at, with its modifiers)."
    )
    relations: list[list[str]]


class FindingsView(BaseModel):
    """Sections and findings of a text."""

    sections: list[Section]
    entities: list[Entity]
    chexpert: dict[str, float | None]


FRONTAL = {"PA", "AP", "POSTERO_ANTERIOR", "ANTERO_POSTERIOR"}


def _is_frontal(view: str | None) -> bool:
    return bool(view) and view.upper().replace("-", "_") in FRONTAL


def _study(session, study_id: str) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise HTTPException(404, detail="no study with this id")
    return study


def _decoded(study: Study) -> list[Any]:
    return [i for i in study.instances if i.image_sha256]


@router.get("/config", response_model=PageConfig,
            summary="Window presets, signature meanings, worklist choices",
            description="Roles: radiologist, admin.", openapi_extra=roles_doc(*CLINICAL),
            responses=ERRORS)
def page_config(_: Clinician) -> PageConfig:
    return PageConfig(
        presets=[WindowPreset(name=n, center=c, width=w) for n, (c, w) in WINDOW_PRESETS.items()],
        meanings=[Meaning(value=m.value, text=workflow.MEANING_TEXT[m])
                  for m in workflow.SignatureMeaning],
        statuses=[s.value for s in ReportStatus], sorts=[s.value for s in workflow.WorklistSort],
    )


@router.get("/studies/{study_id}/images", response_model=StudyImages,
            summary="The decoded images of a study",
            description="Roles: radiologist, admin. "
            "Index order equals GET /v1/studies/{id}/images/{n}.png.",
            openapi_extra=roles_doc(*CLINICAL), responses={**ERRORS, 404: {"model": Problem}})
def study_images(study_id: str, session: SessionDep, _: Clinician) -> StudyImages:
    study = _study(session, study_id)
    return StudyImages(study_id=study.id, images=[
        ImageInfo(index=n, view=i.view, frontal=_is_frontal(i.view), selected=bool(i.selected),
                  rows=i.rows, columns=i.columns) for n, i in enumerate(_decoded(study))])


@router.get("/studies/{study_id}/images/{index}/full.png",
            summary="One image at its original resolution (PNG)",
            description="Roles: radiologist, admin. Decodes the DICOM file again (slower than the "
            "cached render); 8-bit grayscale over the full range (window `default`).",
            openapi_extra=roles_doc(*CLINICAL), response_class=Response,
            responses={**ERRORS, 200: {"content": {"image/png": {}}}, 404: {"model": Problem},
                       409: {"model": Problem}})
async def full_image(study_id: str, index: int, session: SessionDep, store: StoreDep,
                     _: Clinician) -> Response:
    study = _study(session, study_id)
    images = _decoded(study)
    if not images:
        raise HTTPException(
            409, detail=f"the study has no decoded images (state {study.state.value})"
        )
    if not 0 <= index < len(images):
        raise HTTPException(
            404, detail=f"image index out of range: the study has {len(images)} images"
        )
    sha = images[index].sha256

    def render() -> bytes:
        decoded = decode(store.get(sha), max_side=1 << 30)
        return render_png(decoded.pixels, "default")

    try:
        png = await run_in_threadpool(render)
    except ImageDecodeError as error:
        raise HTTPException(
            409, detail=f"the original image cannot be decoded again: {error.message}"
        ) from None
    return Response(png, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


def section_spans(text: str) -> list[Section]:
    """Header and body ranges of each section header found in `text` (none: the whole text is one
    body).

    >>> text = "FINDINGS: Clear. IMPRESSION: Normal."
    >>> [(s.name, text[s.body_start:s.end].strip()) for s in section_spans(text)]
    [('findings', 'Clear.'), ('impression', 'Normal.')]
    """
    matches = list(_HEADER.finditer(text))
    out = []
    for n, m in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(text)
        out.append(Section(name=m.group(1).lower().replace(" ", "_"), header_start=m.start(),
                           body_start=m.end(), end=end))
    return out


def findings_of(text: str) -> FindingsView:
    """Sections, entities with character spans (extractor tokens) and CheXpert-style labels."""
    from evaluation import chexpert, radgraph
    from evaluation.extractor.rules import TOKEN_PATTERN

    sections = section_spans(text)
    header_ranges = [(s.header_start, s.body_start) for s in sections]
    spans = [(m.start(), m.end()) for m in TOKEN_PATTERN.finditer(text)]
    graph = radgraph.extract(text)
    raw = graph.get("entities", {})
    entities: list[Entity] = []
    for key, e in raw.items():
        start_ix, end_ix = int(e["start_ix"]), int(e["end_ix"])
        if not (0 <= start_ix <= end_ix < len(spans)):
            continue
        start, end = spans[start_ix][0], spans[end_ix][1]
        if any(lo <= start < hi for lo, hi in header_ranges):
            continue  # a section header is not a finding
        anatomy = []
        for relation, target in e.get("relations", []):
            if relation == "located_at" and target in raw:
                words = [t for t in raw.values() if ["modify", target] in t.get("relations", [])]
                words.append(raw[target])
                words.sort(key=lambda t: int(t["start_ix"]))
                anatomy.append(" ".join(t["tokens"] for t in words))
        entities.append(Entity(id=str(key), text=text[start:end], label=e["label"],
                               certainty=CERTAINTY.get(e["label"], "other"), start=start, end=end,
                               anatomy=anatomy,
                               relations=[list(r) for r in e.get("relations", [])]))
    labels = chexpert.label(text)
    chexpert_labels = {str(k): (None if v is None else float(v)) for k, v in dict(labels).items()}
    return FindingsView(sections=sections, entities=entities, chexpert=chexpert_labels)


@router.post("/findings", response_model=FindingsView,
             summary="Sections and extracted findings of a text, with spans",
             description="Roles: radiologist, admin. Runs the RadGraph-style extractor and the "
             "CheXpert-style labeler on the text (nothing is stored). Offsets are in characters of "
             "the text as sent.",
             openapi_extra=roles_doc(*CLINICAL), responses=ERRORS)
async def analyse_text(body: FindingsRequest, _: Clinician) -> FindingsView:
    return await run_in_threadpool(findings_of, body.text)
