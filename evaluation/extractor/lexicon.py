"""Word lists of the rule-based RadGraph-style extractor: anatomy, observations, modifiers, cues.

Every entry is one lower-cased token (or a hyphen compound written with its hyphens, e.g.
``right-sided``). The category decides the entity label and how relations attach; see
:mod:`evaluation.extractor` for the conventions.
"""

from __future__ import annotations

# Anatomy that can head an anatomy phrase ("lobe" in "left lower lobe", "lung" in "lung bases").
ANATOMY = frozenset(
    """
    lung lungs pulmonary lobe lobes lingula lingular heart cardiac mediastinum mediastinal
    cardiomediastinal hilum hila hilar pleural pleura pleurae chest thorax thoracic hemithorax
    hemithoraces hemidiaphragm hemidiaphragms diaphragm diaphragms diaphragmatic costophrenic
    cardiophrenic aorta aortic trachea tracheal carina svc cavoatrial atrium atrial ventricle
    jugular ij subclavian brachiocephalic spine spinal vertebral vertebrae vertebra rib ribs
    clavicle clavicles osseous bones bone bony skeletal tissues tissue abdomen abdominal stomach
    airspace airspaces air-space interstitial interstitium parenchyma parenchymal retrocardiac
    perihilar basilar bibasilar basal bibasal apical apicolateral subpleural cardiopulmonary
    bronchovascular vascular vasculature vascularity vessels venous arterial sulcus fissure
    gastroesophageal esophagus humerus shoulder shoulders sternum sternal thyroid neck
    subdiaphragmatic pericardial perihilar midlung lungs pleuroparenchymal hilus paratracheal
    axillary subsegmental segmental mainstem bronchus bronchi bronchial cardiomediastinum
    glenohumeral acromioclavicular scapula azygos vena cava
    subcutaneous veins vein ventricular ventricle airways airway
    """.split()
)

# Anatomy words that describe an organ rather than name one: they modify the organ they follow
# ("lung bases": bases -> lung; "cardiac silhouette": silhouette -> cardiac).
ANATOMY_DESCRIPTOR = frozenset(
    """
    silhouette silhouettes contour contours size volumes volume base bases apex apices angle
    angles margin margins border borders knob arch zone zones junction segment segments
    """.split()
)

# Position and laterality: anatomy that modifies the head of its phrase.
ANATOMY_POSITION = frozenset(
    """
    left right bilateral upper lower middle mid medial lateral anterior posterior distal proximal
    internal superior inferior left-sided right-sided soft
    """.split()
)

# Findings and devices: observation heads.
FINDING = frozenset(
    """
    effusion effusions pneumothorax pneumothoraces hydropneumothorax atelectasis opacity
    opacities opacification consolidation consolidations edema pneumonia pneumonias cardiomegaly
    nodule nodules mass masses fracture fractures granuloma granulomas calcification
    calcifications infiltrate infiltrates congestion emphysema scarring scar fibrosis thickening
    hernia scoliosis kyphosis process processes abnormality abnormalities disease infection
    collapse enlargement tortuosity widening engorgement hyperinflation hyperexpansion lucency
    deformity deformities pneumoperitoneum pneumomediastinum aspiration fluid density densities
    findings finding change changes osteopenia atherosclerosis spondylosis markings prominence
    blunting elevation eventration lesion lesions metastases metastasis malignancy shift
    cardiomyopathy hypertension granulomata injury air emboli embolism osteophytes bronchiectasis
    overload flattening pneumonitis lymphadenopathy effusions
    hemorrhage loss complication complications hematoma contusion
    tube tubes catheter catheters line lines pacemaker pacer leads lead wires wire clips clip
    stent stents drain drains port picc valve valves prosthesis hardware sutures icd device
    devices defibrillator plate screws coil cannula
    """.split()
)

# Observation words that can stand as the predicate of an anatomy ("lungs are clear").
STATE = frozenset(
    """
    normal unremarkable clear enlarged intact tortuous prominent expanded hyperinflated
    hyperexpanded widened calcified elevated small-volume low unchanged stable
    engorged midline
    """.split()
)

# Modifiers of observations: size, severity, time course, character.
OBS_MODIFIER = frozenset(
    """
    small smaller moderate large larger mild minimal trace tiny severe slight focal patchy
    streaky linear plate-like platelike acute chronic new stable unchanged increased increasing
    decreased decreasing improved improving worsened worsening persistent residual calcified
    displaced nondisplaced non-displaced healed healing old layering loculated diffuse multifocal
    hazy ill-defined early developing significant definite obvious appreciable overt frank
    confluent nodular cystic bullous degenerative mild-to-moderate moderate-to-large
    small-to-moderate moderate-to-severe low atelectatic reticular reticulonodular
    compressive dependent recurrent underlying superimposed lobar segmental wedge-shaped
    endotracheal nasogastric orogastric enteric feeding tracheostomy central dual-lead
    dual-chamber sternotomy surgical et ng og
    multiple metastatic interstitial-type improvement increase decrease progression
    extensive substantial asymmetric postoperative supervening congestive transvenous dobbhoff
    monitoring pre-existing
    """.split()
)

# Change nouns: they modify the finding they are about, across "in" / "of"
# ("interval improvement in the pulmonary edema").
CHANGE_NOUN = frozenset("improvement increase decrease progression".split())

# Degree words: they modify the next observation word ("mildly enlarged").
DEGREE = frozenset(
    """
    mildly moderately slightly markedly severely minimally well grossly substantially
    """.split()
)

# Cues. Negation before its scope ("no", "without"), after it ("has resolved").
NEGATION_BEFORE_1 = frozenset("no not without resolved neither nor".split())
NEGATION_BEFORE_2 = frozenset(
    tuple(p.split())
    for p in ("free of", "negative for", "absence of", "resolution of", "rather than",
              "removal of", "clear of", "no longer")
)
NEGATION_AFTER = (
    ("not", "seen"), ("not", "identified"), ("not", "present"), ("not", "visualized"),
    ("not", "demonstrated"), ("not", "evident"), ("not", "appreciated"), ("not", "noted"),
    ("has", "resolved"), ("have", "resolved"), ("resolved",), ("has", "cleared"),
    ("have", "cleared"), ("is", "absent"), ("are", "absent"), ("no", "longer"), ("removed",),
)
UNCERTAIN_BEFORE_1 = frozenset(
    """
    possible possibly probable probably likely questionable suspected suspicious concerning
    worrisome may might could suggestive suggesting suggests suggest equivocal versus vs
    presumed presumably borderline potential
    """.split()
)
UNCERTAIN_AFTER = (
    ("cannot", "be", "excluded"), ("can", "not", "be", "excluded"), ("not", "excluded"),
    ("cannot", "be", "ruled", "out"), ("not", "ruled", "out"), ("is", "suspected"),
    ("are", "suspected"), ("is", "possible"), ("are", "possible"), ("is", "likely"),
    ("not", "be", "excluded"), ("cannot", "be", "completely", "excluded"),
    ("cannot", "be", "entirely", "excluded"), ("not", "entirely", "excluded"),
    ("not", "completely", "excluded"), ("be", "ruled", "out"),
)
CANNOT_EXCLUDE_BEFORE = (("cannot", "exclude"), ("cannot", "rule", "out"), ("can't", "exclude"))

# Suggestive_of triggers: the finding before points to the findings after. ``True``: the targets
# are uncertain; ``False``: they stay definite ("consistent with").
SUGGESTIVE = {
    ("may", "represent"): True, ("could", "represent"): True, ("might", "represent"): True,
    ("likely", "represents"): True, ("likely", "represent"): True, ("probably", "represents"): True,
    ("may", "reflect"): True, ("could", "reflect"): True, ("likely", "reflects"): True,
    ("likely", "reflecting"): True, ("possibly", "reflecting"): True,
    ("likely", "due", "to"): True, ("may", "be", "due", "to"): True,
    ("could", "be", "due", "to"): True, ("suggestive", "of"): True, ("suggesting",): True,
    ("concerning", "for"): True, ("worrisome", "for"): True, ("suspicious", "for"): True,
    ("likely",): True, ("possibly",): True, ("may", "be"): True, ("could", "be"): True,
    ("consistent", "with"): False, ("compatible", "with"): False, ("representing",): False,
    ("represents",): False, ("reflecting",): False,
}

# Words that end a clause: cues do not reach across them.
CLAUSE_BREAK = frozenset(
    "but however although though whereas while which except . ; : ? !".split()
)
# After a comma, these words start a new assertion and end the scope of a cue.
COMMA_BREAK = frozenset(
    """
    possible possibly probable likely mild mildly minimal small moderate large severe new stable
    unchanged persistent there the with a an which concerning may could representing
    consistent compatible suggesting worrisome
    """.split()
)
COPULA = frozenset(
    "is are was were appears appear remains remain seems seem has have".split()
)
PREPOSITION = frozenset(
    """
    in at of within involving along on over overlying projecting throughout near above below
    into from under beneath
    """.split()
)
DETERMINER = frozenset("the a an this these both its their".split())
