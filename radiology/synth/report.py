"""MIMIC-CXR-style report text for a synthetic study, with the CheXpert labels it implies.

Every sentence is built from a small grammar (several sentence shapes per finding, synonyms,
optional clauses, shuffled order of negatives) and carries the labels it asserts, so the label
table is derived from the very sentences written, the way a rules-based labeler reads them:
a positive mention gives 1.0, an uncertain one ("may represent") -1.0, a negation 0.0, and a
finding never mentioned stays blank. The five commonly scored findings are named with the
standard terms a CheXpert labeler recognises, and, when absent, are usually negated.
"""

from __future__ import annotations

import textwrap

import numpy as np

from radiology.synth.findings import CHEXPERT_FINDINGS, Finding, StudySpec

Labels = dict[str, float | None]
Sentence = tuple[str, dict[str, float]]


def _pick(rng: np.random.Generator, options):
    """One of `options`, uniformly."""
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


_SIZE = {"mild": "small", "moderate": "moderate", "severe": "large"}
_DEGREE = {"mild": "mild", "moderate": "moderate", "severe": "severe"}


def _side_phrase(side: str, noun: str, rng) -> str:
    """'right pleural effusion', 'bilateral pleural effusions', 'left-sided ...'."""
    if side == "bilateral":
        return f"{_pick(rng, ('bilateral', 'bilateral'))} {noun}s"
    return f"{_pick(rng, (side, side, side + '-sided'))} {noun}"


def _base(side: str, rng) -> str:
    if side == "bilateral":
        return _pick(rng, ("bibasilar", "bilateral basilar", "bibasal"))
    return _pick(rng, (f"{side} basilar", f"{side} base", f"{side} lower lung"))


# --- positive sentences, one function per finding -----------------------------------------------

def _cardiomegaly(f: Finding, rng) -> Sentence:
    deg = _DEGREE[f.severity]
    s = _pick(rng, (
        f"The heart is {_pick(rng, ('mildly', 'moderately', 'markedly'))} enlarged.",
        f"There is {deg} cardiomegaly.",
        f"{_cap(deg)} enlargement of the cardiac silhouette is present.",
        f"The cardiac silhouette is {_pick(rng, ('enlarged', 'enlarged', 'moderately enlarged'))}.",
        f"{_cap(deg)} cardiomegaly is {_pick(rng, ('seen', 'present', 'noted'))}.",
        "Heart size is enlarged.",
    ))
    if f.severity == "mild":
        s = s.replace("markedly", "mildly").replace("moderately", "mildly")
    if f.severity == "severe":
        s = s.replace("mildly", "markedly").replace("moderately", "markedly")
    if f.severity == "moderate":
        s = s.replace("mildly", "moderately").replace("markedly", "moderately")
    return s, {"Cardiomegaly": 1.0}


_EFFUSION_SIGNS = (
    "blunting of the costophrenic angle",
    "a meniscus along the lateral chest wall",
    "adjacent compressive changes",
)


def _effusion(f: Finding, rng) -> Sentence:
    size = _SIZE[f.severity]
    noun = _side_phrase(f.side, "pleural effusion", rng)
    plural = f.side == "bilateral"
    s = _pick(rng, (
        f"There {'are' if plural else 'is a'} {size} {noun}.",
        f"{_cap(size)} {noun} {'are' if plural else 'is'} "
        f"{_pick(rng, ('present', 'seen', 'noted'))}.",
        f"{_cap(size)} {noun} with {_pick(rng, _EFFUSION_SIGNS)}.",
        f"{_cap(noun)} {'are' if plural else 'is'} {size}.",
    ))
    if size == "small" and rng.random() < 0.3 and not plural:
        s = (f"Blunting of the {f.side} costophrenic angle reflects a small {f.side} "
             "pleural effusion.")
    return s, {"Pleural Effusion": 1.0}


def _edema(f: Finding, rng) -> Sentence:
    deg = _DEGREE[f.severity]
    s = _pick(rng, (
        f"There is {deg} pulmonary edema.",
        f"{_cap(deg)} pulmonary edema is present.",
        f"{_cap(deg)} interstitial pulmonary edema with perihilar haziness.",
        "Perihilar haziness and vascular indistinctness are compatible with "
        f"{deg} pulmonary edema.",
        f"Findings are consistent with {deg} pulmonary edema.",
        f"There is {deg} interstitial edema.",
    ))
    return s, {"Edema": 1.0}


def _consolidation(f: Finding, rng) -> Sentence:
    where = f.detail
    s = _pick(rng, (
        f"There is {'a ' if rng.random() < 0.5 else ''}{where} consolidation.",
        f"Focal consolidation is seen in the {where}.",
        f"{_cap(where)} consolidation is {_pick(rng, ('present', 'noted', 'new'))}.",
        f"Consolidation in the {where} {_pick(rng, ('is present', 'is noted', 'is dense'))}.",
        f"Dense {where} consolidation with air bronchograms.",
    ))
    if f.side == "bilateral":
        s = _pick(rng, ("There is bibasilar consolidation.",
                        "Bilateral lower lobe consolidation is present."))
    return s, {"Consolidation": 1.0}


def _atelectasis(f: Finding, rng) -> Sentence:
    base = _base(f.side, rng)
    kind = {"mild": _pick(rng, ("minimal", "mild", "discoid")),
            "moderate": _pick(rng, ("moderate", "subsegmental", "linear")),
            "severe": _pick(rng, ("severe", "extensive"))}[f.severity]
    s = _pick(rng, (
        f"There is {kind} {base} atelectasis.",
        f"{_cap(kind)} atelectasis at the "
        f"{base.replace('basilar', 'base').replace('bibase', 'bases')}.",
        f"{_cap(base)} opacities are "
        f"{_pick(rng, ('consistent with', 'compatible with', 'most likely'))} {kind} atelectasis.",
        f"{_cap(kind)} {base} atelectasis is {_pick(rng, ('seen', 'noted', 'present'))}.",
    ))
    labels = {"Atelectasis": 1.0}
    if "opacities" in s:
        labels["Lung Opacity"] = 1.0
    if f.severity == "severe" and f.side != "bilateral":
        s += f" There is associated elevation of the {f.side} hemidiaphragm."
    return s, labels


def _opacity(f: Finding, rng) -> Sentence:
    zone = f"{f.detail} {_pick(rng, ('lung', 'zone'))}"
    side = "bilateral" if f.side == "bilateral" else f.side
    s = _pick(rng, (
        f"There is a hazy opacity in the {side} {zone}.",
        f"{_cap(side)} {zone} opacity is {_pick(rng, ('seen', 'noted', 'present'))}.",
        f"An ill-defined {side} {zone} opacity is {_pick(rng, ('seen', 'noted'))}.",
    ))
    return s, {"Lung Opacity": 1.0}


def _pneumonia(f: Finding, rng) -> Sentence:
    if f.uncertain:
        return _pick(rng, (
            "This may represent pneumonia in the appropriate clinical setting.",
            "Findings may represent pneumonia.",
            "Infection cannot be excluded and this may represent pneumonia.",
            "This could reflect pneumonia.",
        )), {"Pneumonia": -1.0}
    return _pick(rng, (
        "Findings are consistent with pneumonia.",
        "This is compatible with pneumonia.",
        "Findings are compatible with an acute pneumonia.",
    )), {"Pneumonia": 1.0}


def _pneumothorax(f: Finding, rng) -> Sentence:
    size = _SIZE[f.severity]
    s = _pick(rng, (
        (f"There is a {size} {f.side} {_pick(rng, ('apical', 'apicolateral', ''))} "
         "pneumothorax.").replace("  ", " "),
        f"{_cap(size)} {f.side} pneumothorax is present.",
        f"A {f.side} pleural line is seen with absent lung markings beyond it, "
        f"consistent with a {size} pneumothorax.",
    ))
    return s, {"Pneumothorax": 1.0}


def _lesion(f: Finding, rng) -> Sentence:
    kind, _, zone = f.detail.partition(" ")
    zone = zone or "mid"
    if kind == "mass":
        s = _pick(rng, (
            (f"A {_pick(rng, ('lobulated', 'large', ''))} {f.side} {zone} "
             "lung mass is seen.").replace("  ", " "),
            f"There is a {f.side} lung mass measuring approximately {int(rng.integers(4, 8))} cm.",
        ))
    else:
        s = _pick(rng, (
            f"A {int(rng.integers(8, 20))} mm nodule is seen in the {f.side} {zone} lung.",
            f"There is a {f.side} {zone} lung nodule.",
            f"A {_pick(rng, ('small', 'well-circumscribed', 'rounded'))} {f.side} "
            "lung nodule is noted.",
        ))
    if f.uncertain:
        s = _pick(rng, (
            f"A possible {f.side} {zone} lung nodule may represent a nipple shadow.",
            f"There is a questionable {f.side} {zone} lung nodule.",
            f"A {f.side} {zone} lung nodule may be present.",
        ))
        return s, {"Lung Lesion": -1.0}
    return s, {"Lung Lesion": 1.0}


def _fracture(f: Finding, rng) -> Sentence:
    if f.detail == "clavicle":
        return _pick(rng, (
            f"There is a displaced fracture of the {f.side} clavicle.",
            f"A {f.side} clavicular fracture is seen.",
        )), {"Fracture": 1.0}
    return _pick(rng, (
        f"There is a {f.side} lateral rib fracture.",
        (f"A {_pick(rng, ('minimally displaced', 'displaced', ''))} fracture of a {f.side} "
         "lateral rib is seen.").replace("  ", " "),
        f"{_cap(f.side)} lateral {_pick(rng, ('sixth', 'seventh', 'eighth'))} rib fracture.",
    )), {"Fracture": 1.0}


def _pleural_other(f: Finding, rng) -> Sentence:
    side = "bilateral" if f.side == "bilateral" else f.side
    if f.detail == "calcified plaques":
        where = "bilaterally" if side == "bilateral" else f"on the {side}"
        sentence = _pick(rng, (f"Calcified pleural thickening is seen {where}.",
                               f"There is calcified pleural thickening {where}."))
        return sentence, {"Pleural Other": 1.0}
    where = "apical" if f.detail == "apical thickening" else "lateral"
    return _pick(rng, (
        f"There is {side} {where} pleural thickening.",
        f"{_cap(side)} {where} pleural thickening is noted.",
    )), {"Pleural Other": 1.0}


def _ecm(f: Finding, rng) -> Sentence:
    return _pick(rng, (
        "The mediastinum is widened.",
        "The cardiomediastinal silhouette is enlarged.",
        (f"There is {_pick(rng, ('mild', 'moderate', ''))} widening of the "
         "mediastinum.").replace("  ", " "),
        "The mediastinal contours are widened.",
    )), {"Enlarged Cardiomediastinum": 1.0}


_DEVICE_TEXT = {
    "endotracheal tube": ("An endotracheal tube terminates {d} cm above the carina.",
                          "Endotracheal tube tip is {d} cm above the carina."),
    "enteric tube": ("An enteric tube courses below the diaphragm with the tip in the stomach.",
                     "A nasogastric tube terminates in the stomach."),
    "central venous catheter": ("A central venous catheter terminates in the mid SVC.",
                                "Central line tip is in the lower SVC."),
    "picc": ("A PICC line terminates in the SVC.",
             "The PICC line tip projects over the cavoatrial junction."),
    "pacemaker": ("A left-sided pacemaker is in place with leads in the right atrium and "
                  "right ventricle.",
                  "Dual-lead pacemaker device is unchanged in position."),
}


def _devices(f: Finding, rng) -> Sentence:
    parts = []
    for name in f.detail.split(","):
        parts.append(_pick(rng, _DEVICE_TEXT[name]).format(d=int(rng.integers(3, 6))))
    return " ".join(parts), {"Support Devices": 1.0}


_POSITIVE = {
    "Cardiomegaly": _cardiomegaly,
    "Pleural Effusion": _effusion,
    "Edema": _edema,
    "Consolidation": _consolidation,
    "Atelectasis": _atelectasis,
    "Lung Opacity": _opacity,
    "Pneumonia": _pneumonia,
    "Pneumothorax": _pneumothorax,
    "Lung Lesion": _lesion,
    "Fracture": _fracture,
    "Pleural Other": _pleural_other,
    "Enlarged Cardiomediastinum": _ecm,
    "Support Devices": _devices,
}

# --- negative sentences ------------------------------------------------------------------------


def _negatives(spec: StudySpec, rng) -> list[Sentence]:
    """Negations of absent findings, grouped the way radiologists group them."""
    out: list[Sentence] = []
    has = spec.has
    heart_normal = not has("Cardiomegaly")
    medi_normal = not has("Enlarged Cardiomediastinum")
    if heart_normal and medi_normal and rng.random() < 0.9:
        out.append(_pick(rng, [
            ("Heart size is normal. The mediastinal and hilar contours are normal.",
             {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0}),
            ("The heart size is normal and the mediastinal contours are unremarkable.",
             {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0}),
            ("Heart size and mediastinum are within normal limits.",
             {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0}),
            ("The cardiac silhouette is normal in size. The mediastinum is not widened.",
             {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0}),
            ("No cardiomegaly.", {"Cardiomegaly": 0.0}),
        ]))
    elif heart_normal and rng.random() < 0.9:
        out.append(_pick(rng, [("Heart size is normal.", {"Cardiomegaly": 0.0}),
                               ("There is no cardiomegaly.", {"Cardiomegaly": 0.0})]))
    elif medi_normal and rng.random() < 0.5:
        out.append(("The mediastinal contours are normal.", {"Enlarged Cardiomediastinum": 0.0}))

    # Lung parenchyma: consolidation / edema / atelectasis / pneumonia grouped.
    lung_neg = []
    if not has("Consolidation") and rng.random() < 0.85:
        lung_neg.append(("focal consolidation", "Consolidation"))
    if not has("Edema") and rng.random() < 0.8:
        lung_neg.append(("pulmonary edema", "Edema"))
    if not has("Atelectasis") and rng.random() < 0.6:
        lung_neg.append(("atelectasis", "Atelectasis"))
    if not has("Pneumonia") and not has("Consolidation") and rng.random() < 0.2:
        lung_neg.append(("pneumonia", "Pneumonia"))
    order = rng.permutation(len(lung_neg))
    lung_neg = [lung_neg[i] for i in order]
    pleural_neg = []
    if not has("Pleural Effusion") and rng.random() < 0.9:
        pleural_neg.append(("pleural effusion", "Pleural Effusion"))
    if not has("Pneumothorax") and rng.random() < 0.85:
        pleural_neg.append(("pneumothorax", "Pneumothorax"))

    def join(items: list[tuple[str, str]]) -> str:
        words = [w for w, _ in items]
        if len(words) == 1:
            return words[0]
        if len(words) == 2:
            return f"{words[0]} or {words[1]}"
        return ", ".join(words[:-1]) + f", or {words[-1]}"

    def labels(items) -> dict[str, float]:
        return {name: 0.0 for _, name in items}

    if lung_neg and pleural_neg and rng.random() < 0.35:
        items = lung_neg + pleural_neg
        out.append((_pick(rng, ("There is no {x}.", "No {x} is seen.", "No {x}.",
                                "There is no evidence of {x}.")).format(x=join(items)),
                    labels(items)))
    else:
        parenchyma = ("Consolidation", "Edema", "Atelectasis", "Lung Opacity", "Lung Lesion")
        clear = not any(has(n) for n in parenchyma)
        shapes = ("There is no {x}.", "No {x}.", "No {x} is seen.")
        if clear:
            shapes += ("The lungs are clear without {x}.", "Lungs are clear, without {x}.")
        if lung_neg:
            out.append((_pick(rng, shapes).format(x=join(lung_neg)),
                        labels(lung_neg)))
        if pleural_neg:
            out.append((_pick(rng, ("No {x}.", "There is no {x}.", "No {x} is seen.",
                                    "No {x} is identified.")).format(x=join(pleural_neg)),
                        labels(pleural_neg)))
    return out


def _no_fracture(rng) -> Sentence:
    return _pick(rng, [("No displaced fracture is seen.", {"Fracture": 0.0}),
                       ("No acute osseous abnormality is seen.", {})])


# --- assembling a report ---------------------------------------------------------------------

_INDICATIONS = (
    "{age}-year-old {person} with shortness of breath.",
    "{age}-year-old {person} with cough and fever, evaluate for pneumonia.",
    "History: ___{sex} with chest pain.",
    "___-year-old {person} with dyspnea. Evaluate for acute cardiopulmonary process.",
    "{person_cap} with hypoxia.",
    "Evaluate for interval change.",
    "{age}-year-old {person} status post fall, assess for fracture.",
    "___{sex} with worsening dyspnea on exertion, evaluate for fluid overload.",
    "Pre-operative chest radiograph.",
    "{age}-year-old {person} with tachypnea and leukocytosis.",
)
_DEVICE_INDICATIONS = (
    "{age}-year-old {person}, intubated. Assess tube position.",
    "Line placement.",
    "___{sex} in the ICU, evaluate lines and tubes.",
)
_COMPARISONS = ("None.", "___", "Chest radiograph from ___.", "Prior study of ___.",
                "Chest radiographs ___ and ___.", "None available.")
_INTERVAL = (
    "This is new compared to the prior study.",
    "This has increased since the prior radiograph.",
    "This is slightly decreased compared to the prior exam.",
    "This is unchanged from the prior study.",
    "Not substantially changed compared to the prior.",
)
_EXAMS = {"PA": ("CHEST (PA AND LAT)", "CHEST (PA AND LAT)", "CHEST (PA)"),
          "AP": ("CHEST (PORTABLE AP)", "CHEST (PORTABLE AP)")}


def _wrap(text: str) -> str:
    return "\n".join(" " + line for line in textwrap.wrap(text, 76))


def _order(spec: StudySpec) -> list[str]:
    """The conventional reading order: devices, lungs, pleura, heart and mediastinum, bones."""
    order = ["Support Devices", "Consolidation", "Lung Opacity", "Pneumonia", "Edema",
             "Atelectasis", "Lung Lesion", "Pleural Effusion", "Pneumothorax", "Pleural Other",
             "Cardiomegaly", "Enlarged Cardiomediastinum", "Fracture"]
    return [n for n in order if spec.has(n)]


def merge_labels(sentences: list[Sentence]) -> Labels:
    """CheXpert aggregation: positive beats uncertain beats negative; unmentioned is blank.

    "No Finding" is 1.0 when no finding other than Support Devices is positive or uncertain.
    """
    labels: Labels = {name: None for name in CHEXPERT_FINDINGS}
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    for _, lab in sentences:
        for name, value in lab.items():
            old = labels[name]
            if old is None or rank[value] > rank[old]:
                labels[name] = value
    abnormal = any(labels[n] in (1.0, -1.0) for n in CHEXPERT_FINDINGS
                   if n not in ("No Finding", "Support Devices"))
    labels["No Finding"] = None if abnormal else 1.0
    return labels


def write_report(spec: StudySpec, rng: np.random.Generator) -> tuple[str, Labels]:
    """The full report text (MIMIC-CXR layout) and its CheXpert labels."""
    positives: list[Sentence] = []
    restated: list[Sentence] = []  # the same findings in other words, for the impression
    for name in _order(spec):
        finding = spec.get(name)
        assert finding is not None
        for out in (positives, restated):
            text, lab = _POSITIVE[name](finding, rng)
            if name == "Pneumonia" and out:  # qualifies the opacity just described
                prev_text, prev_lab = out[-1]
                out[-1] = (f"{prev_text} {text}", {**prev_lab, **lab})
            else:
                out.append((text, lab))
    negatives = _negatives(spec, rng)
    if not spec.has("Fracture") and rng.random() < 0.15:
        negatives.append(_no_fracture(rng))
    normal = not positives or all(lab.keys() == {"Support Devices"} for _, lab in positives)

    comparison = _pick(rng, _COMPARISONS)
    has_prior = comparison not in ("None.", "None available.")
    if has_prior and positives and rng.random() < 0.35:
        # Interval change relative to the prior study (the picture shows only the present).
        i = int(rng.integers(len(positives)))
        text, lab = positives[i]
        positives[i] = (f"{text} {_pick(rng, _INTERVAL)}", lab)

    # The negatives come as one block somewhere among the positive statements.
    insert_at = int(rng.integers(len(positives) + 1))
    findings_sentences = positives[:insert_at] + negatives + positives[insert_at:]

    # Impression: the positives restated briefly, or a normal statement.
    impression: list[Sentence] = []
    if normal:
        impression.append(_pick(rng, [
            ("No acute cardiopulmonary process.", {}),
            ("No acute cardiopulmonary abnormality.", {}),
            ("Normal chest radiograph.", {}),
            ("No evidence of acute disease.", {}),
        ]))
        if spec.devices:
            impression.insert(0, ("Lines and tubes as described above.", {"Support Devices": 1.0}))
    else:
        for sentence, lab in restated:
            if "Support Devices" in lab and len(restated) > 1:
                continue
            impression.append((sentence, lab))
        if has_prior and rng.random() < 0.3:
            impression.append((_pick(rng, ("Otherwise, no significant interval change.",
                                           "Otherwise unchanged from prior.")), {}))

    sex_word = {"M": ("man", "M"), "F": ("woman", "F")}[spec.sex]
    pool = _DEVICE_INDICATIONS if spec.devices and rng.random() < 0.6 else _INDICATIONS
    indication = _pick(rng, pool).format(
        age="___" if rng.random() < 0.5 else str(spec.age), person=sex_word[0],
        person_cap=_cap(sex_word[0]), sex=sex_word[1])
    exam = _pick(rng, _EXAMS[spec.view])
    technique = {"CHEST (PA AND LAT)": "Chest PA and lateral", "CHEST (PA)": "Chest PA",
                 "CHEST (PORTABLE AP)": "Portable AP chest radiograph"}[exam]

    findings_text = " ".join(s for s, _ in findings_sentences)
    if len(impression) > 1 and rng.random() < 0.5:
        impression_text = "\n".join(f"{i}. {s}" for i, (s, _) in enumerate(impression, 1))
        impression_block = "\n".join(_wrap(line) for line in impression_text.split("\n"))
    else:
        impression_block = _wrap(" ".join(s for s, _ in impression))
    all_sentences = findings_sentences + impression
    # A few reports carry only an impression, as in the real collection.
    with_findings = rng.random() > 0.03
    if not with_findings:
        all_sentences = impression
    parts = [
        " " * 33 + "FINAL REPORT",
        f" EXAMINATION:  {exam}",
        "",
        f" INDICATION:  {indication}",
        "",
        f" TECHNIQUE:  {technique}",
        "",
        f" COMPARISON:  {comparison}",
        "",
    ]
    if with_findings:
        parts += [" FINDINGS: ", " ", _wrap(findings_text), " "]
    parts += [" IMPRESSION: ", " ", impression_block, ""]
    return "\n".join(parts), merge_labels(all_sentences)
