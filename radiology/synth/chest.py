"""A procedurally drawn chest radiograph in which each finding changes the picture as on film.

The image is built in an additive "attenuation" space (0 = air, about 0.6 = soft tissue, more for
bone and metal) and mapped to display brightness at the end, MONOCHROME2 style (bright = dense).
Frontal views follow the radiographic convention: the patient's right lies on the viewer's left.

Coordinates: `v` runs 0..1 from top to bottom, `u` runs -1..1 from the viewer's left to right;
`a = |u|` is the lateral distance from the midline on one side of the chest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import draw, transform

from radiology.synth.findings import StudySpec

_SEVERITY_INDEX = {"mild": 0, "moderate": 1, "severe": 2}
#: Render at most this many pixels on the longer side, then resize to the requested size.
RENDER_MAX = 512


@dataclass
class Anatomy:
    """The normal-variant geometry of one patient's chest (all in normalised units)."""

    lung_width: float  # lateral extent of each lung at the costophrenic angle (u units)
    apex_v: float
    cp_v: float  # level of the costophrenic angles
    dome_right: float  # top of the right hemidiaphragm
    dome_left: float
    dome_peak: float  # lateral distance of each dome's highest point
    hilum_v: float
    ctr: float  # cardiothoracic ratio
    heart_shift: float
    mediastinum: float  # half width of the upper mediastinum
    body_width: float
    breasts: bool


def _sample_anatomy(rng: np.random.Generator, spec: StudySpec) -> Anatomy:
    apex = rng.uniform(0.10, 0.14)
    cp = rng.uniform(0.71, 0.77)
    if spec.view == "AP":
        cp -= rng.uniform(0.01, 0.04)  # portable films: lower lung volumes
    dome_r = cp - rng.uniform(0.10, 0.13)
    # Cardiothoracic ratio: normal hearts stay under 0.46, enlarged ones start at 0.60, so the
    # difference is some 10 % of the chest width even at 128 px.
    ctr = rng.uniform(0.37, 0.46)
    cardiomegaly = spec.get("Cardiomegaly")
    if cardiomegaly is not None:
        lo, hi = ((0.60, 0.63), (0.63, 0.67), (0.67, 0.72))[
            _SEVERITY_INDEX[cardiomegaly.severity]]
        ctr = rng.uniform(lo, hi)
    if spec.view == "AP":
        ctr *= 1.04  # magnification of the anterior heart on AP projection
    return Anatomy(
        lung_width=rng.uniform(0.70, 0.78),
        apex_v=apex,
        cp_v=cp,
        dome_right=dome_r,
        dome_left=dome_r + rng.uniform(0.01, 0.035),
        dome_peak=rng.uniform(0.34, 0.42),
        hilum_v=apex + rng.uniform(0.40, 0.45) * (cp - apex),
        ctr=ctr,
        heart_shift=rng.uniform(-0.02, 0.03),
        mediastinum=rng.uniform(0.085, 0.11),
        body_width=rng.uniform(0.88, 0.97),
        breasts=spec.sex == "F" and rng.random() < 0.8,
    )


def _lung_mask(a, v, an: Anatomy, dome: float, *, width=None, apex=None, medial_extra=None):
    """Binary mask of one lung over the grid (a = lateral distance, v = height)."""
    width = an.lung_width if width is None else width
    apex = an.apex_v if apex is None else apex
    a_apex = 0.24
    t = (v - apex) / (an.cp_v - apex)
    tc = np.clip(t, 0.0, 1.0)
    lateral = a_apex + (width - a_apex) * np.sqrt(1.0 - (1.0 - np.clip(tc / 0.72, 0, 1)) ** 2)
    medial_base = 0.075 if medial_extra is None else 0.075 + medial_extra
    medial = a_apex - (a_apex - medial_base) * np.sqrt(1.0 - (1.0 - np.clip(tc / 0.3, 0, 1)) ** 2)
    peak = an.dome_peak
    lateral_part = dome + (an.cp_v - dome) * ((a - peak) / (width - peak)) ** 2
    medial_part = dome + 0.035 * ((peak - a) / peak) ** 2
    floor = np.where(a > peak, lateral_part, medial_part)
    return (t >= 0) & (a >= medial) & (a <= lateral) & (v <= floor)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide kernels run on a subsampled copy (the same result to the eye, for a
    fraction of the work; bench/README.md has the measured gain)."""
    if sigma <= 0:
        return x
    if sigma < 4:
        return ndimage.gaussian_filter(x, sigma, mode="nearest")
    f = int(sigma // 2)
    small = ndimage.gaussian_filter(x[::f, ::f], sigma / f, mode="nearest")
    return transform.resize(small, x.shape, order=1, mode="edge").astype(x.dtype, copy=False)


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    n = _blur(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / (n.std() + 1e-6)


def _polylines(canvas: np.ndarray, lines: list[tuple[np.ndarray, float]]) -> None:
    """Draw anti-aliased polylines, each (points in (u, v), value), onto `canvas` (max blend)."""
    if not lines:
        return
    h, w = canvas.shape
    rr_all, cc_all, val_all = [], [], []
    for pts_uv, value in lines:
        rows = np.clip(pts_uv[:, 1] * h, 0, h - 1).astype(int).tolist()
        cols = np.clip((pts_uv[:, 0] + 1) * 0.5 * w, 0, w - 1).astype(int).tolist()
        for i in range(len(rows) - 1):
            rr, cc, val = draw.line_aa(rows[i], cols[i], rows[i + 1], cols[i + 1])
            rr_all.append(rr)
            cc_all.append(cc)
            val_all.append(val * value)
    np.maximum.at(canvas, (np.concatenate(rr_all), np.concatenate(cc_all)),
                  np.concatenate(val_all).astype(canvas.dtype))


def _polyline(canvas: np.ndarray, pts_uv: np.ndarray, value: float) -> None:
    """Draw one anti-aliased polyline given in (u, v) coordinates onto `canvas` (max blend)."""
    _polylines(canvas, [(pts_uv, value)])


def _vessel_tree(rng, shape, an: Anatomy, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Branching, gently curving pulmonary vessels fanning out from one hilum.

    Returns (fine, thick) canvases: every branch is drawn on `fine`, the proximal ones also on
    `thick`, so that blurring them differently tapers the vessels towards the periphery.
    """
    fine = np.zeros(shape, np.float32)
    thick = np.zeros(shape, np.float32)
    h, w = shape
    aspect = h / w
    start = np.array([side * 0.14, an.hilum_v])
    roots = rng.uniform(-0.25, 0.25, 6) + np.array([-2.0, -1.4, -0.8, -0.1, 0.5, 1.1])
    stack = [(start, ang, 0.1, 4.0) for ang in roots]
    segments: list[tuple[np.ndarray, float, bool]] = []
    while stack:
        p, ang, length, width = stack.pop()
        # ang: 0 = lateral, negative = upward, positive = downward; each branch bends a little.
        pts = [p]
        for _ in range(3):
            ang = ang + rng.normal(0, 0.12)
            d = np.array([side * np.cos(ang) * 2 * aspect, np.sin(ang)])
            pts.append(pts[-1] + d * length / 3)
        segments.append((np.stack(pts), min(1.0, 0.35 + width / 4.0), width > 2.0))
        if width > 0.85:
            n_child = 2 if rng.random() < 0.8 else 3
            for turn in np.linspace(-0.5, 0.5, n_child):
                stack.append((pts[-1], ang + turn + rng.normal(0, 0.15),
                              length * rng.uniform(0.85, 1.05), width * 0.66))
    _polylines(fine, [(pts, value) for pts, value, _ in segments])
    _polylines(thick, [(pts, 1.0) for pts, _, proximal in segments if proximal])
    return fine, thick


def _disk(u, v, cu, cv, r, aspect):
    return ((u - cu) / aspect) ** 2 + (v - cv) ** 2 <= r**2


def render_frontal(spec: StudySpec, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A frontal (PA or AP, per `spec.view`) chest radiograph, float32 in [0, 1], bright = dense."""
    out_h, out_w = shape
    scale = min(1.0, RENDER_MAX / max(shape))
    h, w = max(64, round(out_h * scale)), max(64, round(out_w * scale))
    # Separate streams: the same seed gives the same patient, film and noise with or without a
    # finding, so a finding is the only difference between two renderings.
    anatomy_rng, finding_rng, acquire_rng = rng.spawn(3)
    rng = anatomy_rng
    an = _sample_anatomy(rng, spec)
    vv, uu = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w * 2 - 1, indexing="ij")
    vv = vv.astype(np.float32)
    uu = uu.astype(np.float32)
    aspect = w / h / 2  # converts v distances to u distances (u spans 2 units over w)
    aa = np.abs(uu)
    right = uu < 0  # patient's right

    # Volume loss from atelectasis raises that hemidiaphragm.
    dome_r, dome_l = an.dome_right, an.dome_left
    atel = spec.get("Atelectasis")
    if atel is not None:
        lift = (0.02, 0.035, 0.05)[_SEVERITY_INDEX[atel.severity]]
        if atel.side in ("right", "bilateral"):
            dome_r -= lift
        if atel.side in ("left", "bilateral"):
            dome_l -= lift

    ecm = spec.get("Enlarged Cardiomediastinum")
    widen = 0.0
    if ecm is not None:
        widen = (0.055, 0.075, 0.10)[_SEVERITY_INDEX[ecm.severity]]
    upper = np.clip((an.hilum_v + 0.04 - vv) / 0.08, 0, 1) * np.clip((vv - an.apex_v) / 0.06, 0, 1)
    medial_extra = widen * upper + (an.mediastinum - 0.075) * upper

    def lung(side_right: bool, **kw) -> np.ndarray:
        dome = dome_r if side_right else dome_l
        m = _lung_mask(aa, vv, an, dome, medial_extra=medial_extra, **kw)
        return m & (right if side_right else ~right)

    lung_r, lung_l = lung(True), lung(False)
    lungs = (lung_r | lung_l).astype(np.float32)

    # Body outline with shoulders and neck; soft tissue thicker at the centre.
    # Lateral chest wall, widening into the shoulders at the top; neck and shoulder line.
    wall = (an.lung_width + 0.1 + 0.03 * np.clip((vv - 0.4) / 0.4, -1, 1)
            + 0.14 * np.exp(-(((vv - 0.08) / 0.14) ** 2)))
    top = 0.015 + 0.08 * np.clip((aa - 0.16) / 0.75, 0, 1) ** 1.5
    trunk = (vv > top) & (aa < wall)
    thickness = np.sqrt(np.clip(1 - (aa / wall) ** 2, 0, 1))
    density = (trunk * (0.30 + 0.32 * thickness)).astype(np.float32)
    density = _blur(density, 1.5)
    if an.breasts:
        for s in (-1, 1):
            cu = s * rng.uniform(0.42, 0.52)
            b = (((uu - cu) / 0.3) ** 2 + ((vv - an.cp_v + 0.1) / 0.16) ** 2) < 1
            density += _blur(b.astype(np.float32), 4) * 0.06 * (vv > an.cp_v - 0.12)

    # Lungs: air subtracts density, more so where the lung is deep.
    depth = _blur(lungs, 18 * h / 512)
    lung_air = _blur(lungs, 1.0) * (0.62 + 0.38 * depth / (depth.max() + 1e-6))

    # Heart: an ellipse sitting on the diaphragm, two thirds of it left of the midline.
    thorax = 2 * an.lung_width
    hw = an.ctr * thorax
    w_right, w_left = 0.36 * hw, 0.64 * hw
    hc_u = an.heart_shift
    hc_v = (dome_r + dome_l) / 2 + 0.005
    hy = 0.16 + 0.35 * (an.ctr - 0.45)
    hx = np.where(uu < hc_u, w_right, w_left)
    # The left ventricle leans down and out (apex towards the left costophrenic angle).
    lean = 0.12 * np.clip(uu - hc_u, 0, None)
    heart = ((((uu - hc_u) / hx) ** 2 + ((vv - lean - hc_v) / hy) ** 2) <= 1) & (vv < hc_v + 0.05)
    heart_soft = _blur(heart.astype(np.float32), 1.2)
    # Aortic knob.
    knob = _disk(uu, vv, 0.03 + an.mediastinum + widen, an.hilum_v - 0.075, 0.05, aspect)
    knob_soft = _blur(knob.astype(np.float32), 1.2)
    lung_air *= 1 - 0.85 * heart_soft
    lung_air *= 1 - knob_soft
    density += 0.05 * heart_soft

    # Hila and pulmonary vessels.
    fine_r, thick_r = _vessel_tree(rng, (h, w), an, -1)
    fine_l, thick_l = _vessel_tree(rng, (h, w), an, 1)
    vessels = _blur(np.maximum(fine_r, fine_l), 0.9 * h / 512) * 1.2 + _blur(
        np.maximum(thick_r, thick_l), 2.0 * h / 512) * 1.6
    hila = np.exp(-(((aa - 0.15) / (aspect * 0.05)) ** 2 + ((vv - an.hilum_v) / 0.05) ** 2))
    vessel_strength = 0.12 * np.clip(vessels, 0, 1.2) + 0.10 * hila

    # Trachea and main bronchi (air column).
    carina = an.hilum_v - 0.035
    trachea = (aa < 0.03) & (vv < carina)
    bronchi = np.zeros((h, w), bool)
    for s in (-1, 1):
        t = np.clip((vv - carina) / 0.06, 0, 1)
        below_carina = (vv >= carina) & (vv < carina + 0.06)
        bronchi |= (np.abs(uu - s * (0.012 + 0.08 * t)) < 0.022) & below_carina
    airway = _blur((trachea | bronchi).astype(np.float32), 1.5) * 0.10

    # Bones: spine, ribs, clavicles.
    spine = _blur((aa < 0.055).astype(np.float32), 1.5)
    period = (an.cp_v - an.apex_v) / 9.0
    disc = (np.cos(2 * np.pi * (vv - an.apex_v) / period) > 0.85).astype(np.float32)
    pedicle_rows = np.cos(2 * np.pi * (vv - an.apex_v) / period + 1.5) > 0.3
    pedicle = np.exp(-((aa - 0.04) / 0.012) ** 2) * pedicle_rows
    bones = spine * (0.10 - 0.04 * disc) + 0.05 * pedicle * spine

    fracture = spec.get("Fracture")
    frac_rib = int(rng.integers(4, 8)) if fracture is not None else -1
    frac_side = (-1 if fracture.side == "right" else 1) if fracture is not None else 0
    rib_th = 0.024
    v1 = vv[:, 0]
    a1 = aa[0]
    for i in range(11):
        v0 = an.apex_v - 0.035 + i * period * 0.95
        span = an.lung_width * (0.55 + 0.45 * np.sqrt(min(1.0, (i + 1) / 5)))
        for s in (-1, 1):
            cols = np.flatnonzero((uu[0] * s > 0.04) & (a1 < 1.1 * span))
            if cols.size == 0:
                continue
            a_c = a1[cols]
            a_rel = a_c / span
            centre = v0 - 0.035 * a_rel + 0.20 * a_rel**3  # posterior rib, per column
            gap = np.zeros_like(a_c)
            broken = fracture is not None and fracture.detail == "rib"
            if broken and i == frac_rib and s == frac_side:
                af = 0.78 * span
                centre = centre + 0.028 * (a_c > af)  # displaced lateral fragment
                gap = np.exp(-(((a_c - af) / 0.016) ** 4))
            # Anterior rib: from the lateral end, downward and medially; fainter.
            a_ant = np.clip((span - a_c) / (span * 0.6), 0, 1)
            centre_ant = v0 - 0.035 + 0.20 + 0.16 * a_ant
            ant_cols = (a_c < span) & (a_c > 0.4 * span)
            lo = min(centre.min(), centre_ant.min()) - rib_th
            hi = max(centre.max(), centre_ant.max()) + rib_th
            rows = np.flatnonzero((v1 >= lo) & (v1 <= hi))
            if rows.size == 0:
                continue
            vr = v1[rows, None]
            d = np.abs(vr - centre[None, :])
            band = np.clip(1 - (d / (rib_th / 2)) ** 6, 0, 1)
            cortex = np.exp(-(((d - rib_th / 2) / (0.25 * rib_th)) ** 2))
            d2 = np.abs(vr - centre_ant[None, :])
            ant = np.clip(1 - (d2 / (rib_th * 0.45)) ** 4, 0, 1) * ant_cols
            patch = (0.05 * band + 0.035 * cortex) * (1 - gap) + 0.035 * ant
            window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            # Ribs show best against aerated lung; soft tissue hides them elsewhere.
            patch *= 0.45 + 0.55 * lungs[window]
            bones[window] += patch.astype(np.float32)
    for s in (-1, 1):
        t = np.clip((aa - 0.06) / 0.5, 0, 1)
        lift = 0.035 if spec.view == "PA" else -0.005
        cen = an.apex_v + lift - 0.07 * t + 0.03 * np.sin(np.pi * t)
        d = np.abs(vv - cen)
        clav = np.clip(1 - (d / 0.02) ** 4, 0, 1) * (aa > 0.06) * (aa < 0.58) * ((uu * s) > 0)
        if fracture is not None and fracture.detail == "clavicle" and s == frac_side:
            d_shift = np.abs(vv - cen - 0.035 * (aa > 0.33))
            clav = np.clip(1 - (d_shift / 0.02) ** 4, 0, 1) * (aa > 0.06) * (aa < 0.58) * (
                (uu * s) > 0) * (1 - np.exp(-(((aa - 0.33) / 0.018) ** 4)))
        bones += 0.15 * clav
    # Humeral heads at the shoulders.
    for s in (-1, 1):
        head = _disk(uu, vv, s * 0.93, an.apex_v + 0.02, 0.075, aspect)
        bones += 0.10 * _blur(head.astype(np.float32), 1.5)

    # Gastric bubble under the left hemidiaphragm.
    bubble = _disk(uu, vv, 0.3, dome_l + 0.06, 0.045, aspect) & (vv > dome_l + 0.035)
    density -= 0.12 * _blur(bubble.astype(np.float32), 2)

    rng = finding_rng
    extra = np.zeros((h, w), np.float32)  # added density from findings
    vessel_keep = np.ones((h, w), np.float32)

    # --- Findings ---------------------------------------------------------------------------
    def sides(f) -> list[bool]:
        return [True, False] if f.side == "bilateral" else [f.side == "right"]

    edema = spec.get("Edema")
    if edema is not None:
        k = _SEVERITY_INDEX[edema.severity]
        r = (0.26, 0.32, 0.40)[k]
        dist = np.sqrt(((aa - 0.16) / (2 * aspect)) ** 2 + (vv - an.hilum_v - 0.04) ** 2)
        haze = np.exp(-((dist / r) ** 2)) * (0.85 + 0.25 * _smooth_noise(rng, (h, w), 7 * h / 512))
        haze = np.clip(haze, 0, 1) * (0.55, 0.68, 0.8)[k]
        lung_air *= 1 - haze
        vessel_keep *= 0.55  # indistinct vessels
        # Kerley B lines at the lateral bases.
        kerley = np.zeros((h, w), np.float32)
        for s in (-1, 1):
            for _ in range(6 + 3 * k):
                kv = rng.uniform(an.cp_v - 0.17, an.cp_v - 0.03)
                lat = an.lung_width * rng.uniform(0.88, 0.99)
                pts = np.array([[s * lat, kv], [s * (lat - 0.07), kv]])
                _polyline(kerley, pts, 1.0)
        extra += 0.07 * _blur(kerley, 0.8) * lungs

    eff = spec.get("Pleural Effusion")
    if eff is not None:
        k = _SEVERITY_INDEX[eff.severity]
        frac = (0.17, 0.30, 0.48)[k] + rng.uniform(-0.02, 0.02)
        for side_right in sides(eff):
            lung_side = lung(side_right)
            dome = dome_r if side_right else dome_l
            level = an.cp_v - frac * (an.cp_v - an.apex_v)
            rel = np.clip((aa - 0.08) / (an.lung_width - 0.08), 0, 1)
            meniscus = level - 0.12 * rel**2.5  # fluid climbs the lateral chest wall
            fluid = np.clip((vv - meniscus) / 0.025, 0, 1)
            region = _blur((lung_side | ((vv > dome - 0.02) & (aa < an.lung_width) & (aa > 0.08)
                                         & ((uu < 0) == side_right) & (vv < an.cp_v + 0.03)))
                           .astype(np.float32), 2.0)
            fl = fluid * region
            lung_air *= 1 - 0.95 * fl
            extra += 0.05 * fl
            vessel_keep *= 1 - fl

    cons = spec.get("Consolidation")
    if cons is not None:
        k = _SEVERITY_INDEX[cons.severity]
        for side_right in sides(cons):
            s = -1 if side_right else 1
            zone = cons.detail
            if "upper" in zone:
                cv = an.apex_v + 0.25 * (an.cp_v - an.apex_v)
            elif "middle" in zone or "lingula" in zone:
                cv = an.hilum_v + 0.09
            else:
                cv = an.cp_v - 0.16
            cu = s * rng.uniform(0.33, 0.45)
            ry = (0.10, 0.12, 0.15)[k]
            ell = ((uu - cu) / (ry * 1.4 * 2 * aspect)) ** 2 + ((vv - cv) / ry) ** 2
            blob = (ell + 0.35 * _smooth_noise(rng, (h, w), 6 * h / 512)) < 1
            # Lobar consolidation stops at a fissure: a sharp, straight border (below an upper
            # lobe, above the middle lobe / lingula); a lower lobe one reaches the diaphragm and
            # effaces it.
            dome = dome_r if side_right else dome_l
            if "upper" in zone:
                fissure = cv + 0.6 * ry
                blob = (blob | ((ell < 1.8) & (vv > cv))) & (vv < fissure)
            elif "middle" in zone or "lingula" in zone:
                fissure = cv - 0.6 * ry
                blob = (blob | ((ell < 1.8) & (vv < cv))) & (vv > fissure)
            elif "lower" in zone:
                blob = blob | ((ell < 2.2) & (vv > cv) & (vv < dome + 0.02))
            # Ill-defined outer margins, dense and nearly homogeneous inside, within the pleura.
            blob_s = _blur(_blur(blob.astype(np.float32), 2.5 * h / 512) * lung(side_right), 1.0)
            patchy = np.clip(0.92 + 0.08 * _smooth_noise(rng, (h, w), 3 * h / 512), 0.75, 1.0)
            lung_air *= 1 - 0.95 * blob_s * patchy
            extra += 0.01 * blob_s
            # Air bronchograms: dark branching lines inside the consolidation.
            br = np.zeros((h, w), np.float32)
            for _ in range(4):
                ang = rng.uniform(0.3, 1.2) * (1 if rng.random() < 0.5 else -1)
                p0 = np.array([s * 0.18, an.hilum_v + rng.uniform(-0.03, 0.05)])
                p1 = np.array([cu + s * rng.uniform(-0.05, 0.1), cv + np.sin(ang) * ry * 0.8])
                _polyline(br, np.stack([p0, (p0 + p1) / 2, p1]), 1.0)
            extra -= 0.12 * _blur(br, 0.9) * blob_s
            vessel_keep *= 1 - blob_s

    opac = spec.get("Lung Opacity")
    if opac is not None:
        k = _SEVERITY_INDEX[opac.severity]
        for side_right in sides(opac):
            s = -1 if side_right else 1
            cv = {"upper": an.apex_v + 0.12, "mid": an.hilum_v + 0.03,
                  "lower": an.cp_v - 0.13}.get(opac.detail, an.hilum_v)
            cu = s * rng.uniform(0.35, 0.5)
            r = (0.09, 0.12, 0.15)[k]
            g = np.exp(-(((uu - cu) / (2 * aspect * r)) ** 2 + ((vv - cv) / r) ** 2) * 1.5)
            lung_air *= 1 - 0.6 * g * lung(side_right)

    if atel is not None:
        k = _SEVERITY_INDEX[atel.severity]
        for side_right in sides(atel):
            s = -1 if side_right else 1
            dome = dome_r if side_right else dome_l
            band = np.zeros((h, w), np.float32)
            for j in range(1 + k):
                # A plate of collapsed lung: a spindle-shaped, slightly curved band.
                bv = dome - 0.045 - 0.05 * j + rng.uniform(-0.01, 0.01)
                a0, a1 = rng.uniform(0.28, 0.34), rng.uniform(0.6, 0.7)
                tilt, bend = rng.uniform(-0.06, 0.06), rng.uniform(-0.03, 0.03)
                t = np.clip((aa - a0) / (a1 - a0), 0, 1)
                centre = bv + tilt * (t - 0.5) + bend * (4 * t * (1 - t))
                th = (0.010, 0.012, 0.014)[k] * np.sqrt(np.clip(np.sin(np.pi * t), 0, 1)) + 1e-4
                inside = (aa > a0) & (aa < a1)
                band = np.maximum(band, np.exp(-(((vv - centre) / th) ** 2)) * inside)
            if k == 2:  # lobar collapse: a dense triangle at the medial base
                tri = (vv > dome - 0.16) & (aa < 0.12 + 0.9 * (vv - dome + 0.16)) & (aa > 0.05)
                band = np.maximum(band, _blur((tri & lung(side_right)).astype(np.float32), 2))
            bm = band * lung(side_right)
            lung_air *= 1 - 0.9 * bm
            extra += 0.03 * bm

    ptx = spec.get("Pneumothorax")
    if ptx is not None:
        side_right = ptx.side == "right"
        s = -1 if side_right else 1
        shrink = (0.84, 0.72, 0.58)[_SEVERITY_INDEX[ptx.severity]]
        anchor_a, anchor_v = 0.12, an.cp_v - 0.02
        a2 = anchor_a + (aa - anchor_a) / shrink
        v2 = anchor_v + (vv - anchor_v) / shrink
        dome = dome_r if side_right else dome_l
        own_side = (uu < 0) == side_right
        collapsed = _lung_mask(a2, v2, an, dome, medial_extra=medial_extra) & own_side
        space = lung(side_right) & ~collapsed
        space_s = _blur(space.astype(np.float32), 0.8)
        vessel_keep *= 1 - space_s
        lung_air += 0.05 * space_s
        col_s = _blur(collapsed.astype(np.float32), 0.7)
        edge = np.hypot(*np.gradient(col_s)) * h / 512 * 2.5
        away = _blur(((aa < 0.1) | (vv > dome - 0.03)).astype(np.float32), 2)
        extra += 0.16 * np.clip(edge * (1 - away), 0, 1) * (uu * s > 0)
        lung_air *= 1 - 0.15 * col_s

    lesion = spec.get("Lung Lesion")
    if lesion is not None:
        side_right = lesion.side == "right"
        s = -1 if side_right else 1
        mass = lesion.detail.startswith("mass")
        r = rng.uniform(0.05, 0.075) if mass else rng.uniform(0.018, 0.028)
        zone = lesion.detail.split()[-1]
        span = an.cp_v - an.apex_v
        lo, hi = {"upper": (0.18, 0.38), "mid": (0.38, 0.6), "lower": (0.6, 0.78)}.get(
            zone, (0.2, 0.75))
        for _ in range(20):
            cu = s * rng.uniform(0.25, 0.6)
            cv = an.apex_v + rng.uniform(lo, hi) * span
            if lung(side_right)[min(h - 1, int(cv * h)), min(w - 1, int((cu + 1) / 2 * w))]:
                break
        ell = ((uu - cu) / (2 * aspect * r)) ** 2 + ((vv - cv) / r) ** 2
        lob = ell + 0.08 * _smooth_noise(rng, (h, w), 5) if mass else ell
        disk = _blur((lob < 1).astype(np.float32), 0.8)
        lung_air *= 1 - 0.85 * disk
        extra += 0.06 * disk

    pother = spec.get("Pleural Other")
    if pother is not None:
        for side_right in sides(pother):
            base = lung(side_right)
            if pother.detail == "apical thickening":
                inner = lung(side_right, apex=an.apex_v + 0.06)
            else:
                inner = lung(side_right, width=an.lung_width - 0.06)
            rim = _blur((base & ~inner).astype(np.float32), 1.2)
            if pother.detail == "calcified plaques":
                spots = _smooth_noise(rng, (h, w), 3) > 1.0
                plaque = _blur((spots & ~lung(side_right, width=an.lung_width - 0.07)
                                & base).astype(np.float32), 1)
                extra += 0.18 * plaque
            lung_air *= 1 - 0.9 * rim
            extra += 0.05 * rim

    pneumonia = spec.get("Pneumonia")
    if pneumonia is not None and cons is None:
        # Pneumonia on an opacity: a patchier, denser centre.
        side_right = pneumonia.side != "left"
        s = -1 if side_right else 1
        patch = _smooth_noise(rng, (h, w), 4) > 0.8
        g = np.exp(
            -(((uu - s * 0.4) / (2 * aspect * 0.12)) ** 2 + ((vv - an.cp_v + 0.14) / 0.12) ** 2)
        )
        lung_air *= 1 - 0.5 * _blur(patch.astype(np.float32), 1.5) * g * lung(side_right)

    # --- Compose -------------------------------------------------------------------------------
    density = (density - 0.48 * lung_air + vessel_strength * vessel_keep * lungs
               + bones - airway + extra + 0.03 * knob_soft)
    density += 0.04 * spine * heart_soft

    # Devices are drawn last: radio-opaque, on top of everything.
    devices = np.zeros((h, w), np.float32)
    for name in spec.devices:
        devices = np.maximum(devices, _draw_device(name, rng, (h, w), an, carina, dome_l))
    density += devices

    img = np.clip(density, 0, None)
    return _acquire(img, acquire_rng, (out_h, out_w))


def _draw_device(name: str, rng, shape, an: Anatomy, carina: float, dome_l: float) -> np.ndarray:
    """One radio-opaque device (tube, line, pacemaker) on an empty canvas."""
    h, w = shape
    canvas = np.zeros(shape, np.float32)

    def curve(points, n=40):
        points = np.asarray(points, float)
        t = np.linspace(0, 1, len(points))
        ts = np.linspace(0, 1, n)
        return np.stack([np.interp(ts, t, points[:, 0]), np.interp(ts, t, points[:, 1])], 1)

    def thick(line: np.ndarray, width_px: float, value: float) -> np.ndarray:
        layer = np.zeros(shape, np.float32)
        _polyline(layer, line, 1.0)
        size = max(1, round(width_px * h / 512))
        if size > 1:
            layer = ndimage.grey_dilation(layer, size=(size, size))
        return _blur(layer, 0.6) * value

    if name == "endotracheal tube":
        tip = carina - rng.uniform(0.04, 0.07)
        x = rng.uniform(-0.01, 0.01)
        for dx in (-0.016, 0.016):
            canvas = np.maximum(canvas, thick(curve([[x + dx, 0.0], [x + dx, tip]]), 2, 0.35))
        canvas = np.maximum(canvas, thick(curve([[x + 0.008, 0.0], [x + 0.008, tip]]), 2, 0.45))
    elif name == "enteric tube":
        pts = [[0.02, 0.0], [0.03, an.hilum_v], [0.05, dome_l], [0.22, dome_l + 0.08],
               [0.3, dome_l + rng.uniform(0.1, 0.16)]]
        canvas = thick(curve(pts, 60), 2.5, 0.4)
    elif name == "central venous catheter":
        if rng.random() < 0.5:  # right internal jugular
            pts = [[-0.16, 0.0], [-0.1, an.apex_v], [-0.06, an.apex_v + 0.1],
                   [-0.05, carina + rng.uniform(0.0, 0.05)]]
        else:  # left subclavian
            pts = [[0.55, an.apex_v + 0.03], [0.3, an.apex_v + 0.06], [0.08, an.apex_v + 0.12],
                   [-0.04, carina + rng.uniform(0.0, 0.05)]]
        canvas = thick(curve(pts, 60), 2.5, 0.45)
    elif name == "picc":
        s = -1 if rng.random() < 0.5 else 1
        pts = [[s * 0.98, an.apex_v + 0.18], [s * 0.7, an.apex_v + 0.05],
               [s * 0.35, an.apex_v + 0.06], [s * 0.1, an.apex_v + 0.12], [-0.04, carina + 0.03]]
        canvas = thick(curve(pts, 80), 1.8, 0.42)
    elif name == "pacemaker":
        gu, gv = rng.uniform(0.42, 0.55), an.apex_v + rng.uniform(0.05, 0.1)
        rr, cc = draw.ellipse(gv * h, (gu + 1) / 2 * w, 0.045 * h, 0.065 * w / 2 * 1.3, shape=shape)
        gen = np.zeros(shape, np.float32)
        gen[rr, cc] = 1.0
        canvas = np.maximum(canvas, _blur(gen, 1.0) * 0.7)
        ra = [[gu - 0.05, gv], [0.2, gv + 0.05], [0.0, an.hilum_v - 0.02],
              [-0.06, an.hilum_v + 0.1]]
        rv = [[gu - 0.05, gv + 0.01], [0.25, gv + 0.08], [0.02, an.hilum_v + 0.05],
              [0.15, an.cp_v - 0.1], [0.22, an.cp_v - 0.12]]
        canvas = np.maximum(canvas, thick(curve(ra, 60), 3, 0.5))
        canvas = np.maximum(canvas, thick(curve(rv, 80), 3, 0.5))
    return canvas


def _acquire(density: np.ndarray, rng: np.random.Generator, out_shape) -> np.ndarray:
    """Exposure, geometry, detector blur and quantum noise: density -> display image [0, 1]."""
    h, w = density.shape
    # Small patient rotation / positioning differences.
    angle = np.deg2rad(rng.uniform(-3, 3))
    zoom = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.025, 0.025, 2) * (w, h)
    centre = np.array([w / 2, h / 2])
    tf = (transform.AffineTransform(translation=-centre)
          + transform.AffineTransform(rotation=angle, scale=zoom)
          + transform.AffineTransform(translation=centre + shift))
    img = transform.warp(density, tf.inverse, order=1, mode="edge", preserve_range=True)
    if img.shape != tuple(out_shape):
        img = transform.resize(img, out_shape, order=1, preserve_range=True, anti_aliasing=False)
    # Exposure: penetration (contrast) and brightness vary between films.
    gain = rng.uniform(0.9, 1.12)
    gamma = rng.uniform(0.85, 1.2)
    img = np.clip(img * gain, 0, None)
    img = 1 - np.exp(-2.2 * img)  # film-like response curve
    img = np.clip(img / (1 - np.exp(-2.2 * 1.15)), 0, 1) ** gamma
    scale = out_shape[0] / 512
    img = ndimage.gaussian_filter(img, rng.uniform(0.4, 0.9) * max(scale, 0.5))
    noise_sigma = rng.uniform(0.008, 0.022)
    img = img + rng.standard_normal(img.shape) * noise_sigma * np.sqrt(np.clip(img, 0.05, 1))
    return np.clip(img, 0, 1).astype(np.float32)


def render_lateral(spec: StudySpec, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A left lateral view (anterior to the viewer's left), float32 in [0, 1], bright = dense.

    Simpler than the frontal view: the lateral image is the optional second image of a study;
    it shows the large findings (heart size, effusions in the posterior sulci, consolidation,
    edema, atelectasis, masses, devices) in their lateral projection.
    """
    out_h, out_w = shape
    scale = min(1.0, RENDER_MAX / max(shape))
    h, w = max(64, round(out_h * scale)), max(64, round(out_w * scale))
    vv, uu = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w * 2 - 1, indexing="ij")
    vv = vv.astype(np.float32)
    uu = uu.astype(np.float32)
    aspect = w / h / 2
    apex, cp = rng.uniform(0.10, 0.14), rng.uniform(0.74, 0.8)
    dome = cp - rng.uniform(0.12, 0.16)
    # Body: an ellipse from sternum (left) to back (right).
    body = np.clip(1 - (uu / 0.82) ** 2, 0, 1) * (vv > 0.02)
    density = (0.32 + 0.36 * np.sqrt(body)) * (np.abs(uu) < 0.82)
    # Lung field: a rounded area between sternum and spine, above the domes.
    t = np.clip((vv - apex) / (cp - apex), 0, 1)
    front = -0.55 + 0.2 * (1 - t) ** 2
    back = 0.5 - 0.15 * (1 - t) ** 3
    floor = dome + (cp - dome) * np.clip((uu - 0.0) / 0.5, 0, 1) ** 2  # posterior sulcus deepest
    dome_cap = ((uu + 0.02) / 0.52) ** 2 + ((vv - apex - 0.14) / 0.14) ** 2 <= 1  # rounded apex
    lung = (vv > apex) & (uu > front) & (uu < back) & (vv < floor) & (dome_cap | (vv > apex + 0.14))
    lung_air = _blur(lung.astype(np.float32), 1.5)
    lung_air *= 0.7 + 0.3 * _blur(lung.astype(np.float32), 20 * h / 512)
    # Heart: anterior and inferior.
    cardio = spec.get("Cardiomegaly")
    hr = 0.2 if cardio is None else (0.25, 0.27, 0.30)[_SEVERITY_INDEX[cardio.severity]]
    heart = ((uu + 0.2) / (hr * 1.3)) ** 2 + ((vv - dome) / (hr * 0.9)) ** 2 < 1
    heart_s = _blur(heart.astype(np.float32), 1.5)
    lung_air *= 1 - 0.8 * heart_s
    # Spine and sternum.
    spine = _blur(((uu > 0.52) & (uu < 0.72)).astype(np.float32), 1.5)
    period = (cp - apex) / 9
    disc = (np.cos(2 * np.pi * (vv - apex) / period) > 0.8).astype(np.float32)
    bones = spine * (0.12 - 0.06 * disc)
    sternum = (uu > -0.66) & (uu < -0.6) & (vv > apex) & (vv < dome)
    bones += 0.08 * _blur(sternum.astype(np.float32), 1)
    hila = np.exp(-(((uu - 0.1) / (2 * aspect * 0.08)) ** 2 + ((vv - 0.42) / 0.07) ** 2))
    extra = 0.08 * hila
    # Trachea: an air column running down and back to the hilum.
    trachea_u = -0.05 + 0.25 * np.clip(vv / 0.42, 0, 1)
    trachea = (np.abs(uu - trachea_u) < 0.035) & (vv < 0.4)
    extra -= 0.08 * _blur(trachea.astype(np.float32), 1.5)

    eff = spec.get("Pleural Effusion")
    if eff is not None:
        frac = (0.12, 0.22, 0.38)[_SEVERITY_INDEX[eff.severity]]
        level = cp - frac * (cp - apex) - 0.1 * np.clip((uu - 0.0) / 0.5, 0, 1) ** 2
        fluid = np.clip((vv - level) / 0.02, 0, 1) * lung_air * (uu > -0.3)
        lung_air *= 1 - 0.95 * fluid
    edema = spec.get("Edema")
    if edema is not None:
        k = _SEVERITY_INDEX[edema.severity]
        lung_air *= 1 - (0.45, 0.55, 0.65)[k] * hila ** 0.5
    cons = spec.get("Consolidation")
    if cons is not None:
        cv = apex + 0.2 if "upper" in cons.detail else (dome - 0.12)
        cu = rng.uniform(-0.1, 0.3)
        ell = ((uu - cu) / (2 * aspect * 0.12)) ** 2 + ((vv - cv) / 0.1) ** 2
        blob = _blur(((ell + 0.3 * _smooth_noise(rng, (h, w), 6)) < 1).astype(np.float32), 3)
        lung_air *= 1 - 0.85 * blob
    atel = spec.get("Atelectasis")
    if atel is not None:
        band = np.exp(-(((vv - dome + 0.05 + 0.05 * uu) / 0.012) ** 2)) * (np.abs(uu) < 0.35)
        lung_air *= 1 - 0.85 * band
    lesion = spec.get("Lung Lesion")
    if lesion is not None:
        r = 0.025 if lesion.detail == "nodule" else 0.06
        disk = _disk(uu, vv, rng.uniform(-0.2, 0.3), rng.uniform(apex + 0.1, dome - 0.1), r, aspect)
        lung_air *= 1 - 0.85 * _blur(disk.astype(np.float32), 1)

    density = density - 0.48 * lung_air + bones + extra
    for name in spec.devices:
        layer = np.zeros((h, w), np.float32)
        if name == "pacemaker":
            gen = _disk(uu, vv, -0.5, apex + 0.08, 0.05, aspect)
            layer = _blur(gen.astype(np.float32), 1) * 0.7
        else:
            x0 = {"endotracheal tube": -0.05, "enteric tube": 0.3}.get(name, -0.1)
            y1 = {"endotracheal tube": 0.3, "enteric tube": 0.9}.get(name, 0.4)
            _polyline(layer, np.array([[x0, 0.0], [x0 + 0.05, y1]]), 1.0)
            layer = _blur(ndimage.grey_dilation(layer, size=(2, 2)), 0.6) * 0.4
        density = density + layer
    return _acquire(np.clip(density, 0, None), rng, (out_h, out_w))
