"""Patient anatomy of the synthetic cohort: organ shapes and tumour phenotypes, sampled once per patient.

Everything lives in a patient frame in millimetres: x towards the patient's left, y posterior, z superior
(the LPS axes), origin on the body axis at the height of the liver centre. Scans place this frame in the
scanner with their own origin and direction (see `grids.py`), and `paint.py` turns it into voxels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from reactkd.cohort.synth import clinical
from reactkd.cohort.synth.tissues import N_TISSUES, Tissue  # noqa: F401 (re-exported)
from reactkd.cohort.synth.worlds import WORLDS, World

# Grade dependence. Every patient has a latent, continuous differentiation d (0-3: well 0-1, moderate 1-2,
# poor 2-3); each nodule deviates a little from it, and every imaging property of a nodule follows its own d.
# Tables give the property at the centre of each grade (d = 0.5, 1.5, 2.5), linearly interpolated and
# extrapolated in between; the spreads are the nodule-to-nodule noise around it. CT effects are weaker and
# noisier than PET ones (FDG rises and 11C-acetate falls with grade). In world v1 calibrated so that hand-made tumour
# features give macro AUC 0.90-0.95 from PET/CT and 0.80-0.87 from CT against the recorded (noisy) grade:
# see docs/synthetic-cohort.md and benchmarks/signal_design.py.
GRADE_CENTRES = (0.5, 1.5, 2.5)
DIFFERENTIATION_RANGE = (-0.25, 3.25)
#: Sd of the latent differentiation around the recorded grade's interval: the pathologist's reading error.
READING_SD = 0.30
NODULE_DIFFERENTIATION_SD = 0.15          # nodules of one liver are alike, not identical
TUMOUR_RADIUS_MM = (12.0, 16.5, 22.0)     # median equivalent radius; log-normal spread below
RADIUS_LOG_SD = 0.22
IRREGULARITY = (0.03, 0.08, 0.14)         # margin lobulation amplitude (fraction of radius)
IRREGULARITY_SD = 0.03
CT_DELTA_HU = (-5.0, -14.0, -24.0)        # tumour minus liver attenuation (portal-venous washout)
CT_DELTA_SD_HU = 6.5
HETEROGENEITY_HU = (5.0, 10.0, 16.0)      # standard deviation of the correlated intratumoural texture
HETEROGENEITY_SD_HU = 3.0
NECROSIS_PROBABILITY = (0.05, 0.25, 0.55)
FDG_TO_LIVER = (1.1, 2.0, 3.6)            # median tumour-to-liver SUV ratio
ACT_TO_LIVER = (3.0, 1.9, 1.05)
PATIENT_UPTAKE_LOG_SD = 0.16              # shared by all tumours of a patient
TUMOUR_UPTAKE_LOG_SD = 0.10               # per tumour
TUMOUR_COUNT_P = (0.45, 0.30, 0.15, 0.10)  # 1, 2, 3 or 4 tumours
MIN_TUMOUR_RADIUS_MM = 7.5
MAX_TUMOUR_RADIUS_MM = 34.0
#: Cohort v2: tumour sizes spread wider (Park 2008's lesions span 1 to over 5 cm).
RADIUS_LOG_SD_V2 = 0.32


@dataclass(frozen=True)
class Focus:
    """A less differentiated part of a nodule (cohort v2): a ball inside it with its own phenotype."""

    offset: np.ndarray          # (3,) mm from the nodule's centre, patient frame
    radius: float
    differentiation: float
    ct_delta_hu: float
    heterogeneity_hu: float
    fdg_ratio: float
    act_ratio: float


@dataclass(frozen=True)
class Tumour:
    """One HCC nodule: a rotated, lobulated ellipsoid with its imaging phenotype."""

    centre: np.ndarray          # (3,) mm, patient frame
    rotation: np.ndarray        # (3, 3), columns are the tumour axes in the patient frame
    axes: np.ndarray            # (3,) semi-axes, mm
    lobe_waves: np.ndarray      # (k, 3) wave vectors (rad/mm) of the margin lobulation
    lobe_phases: np.ndarray     # (k,)
    irregularity: float         # lobulation amplitude, fraction of the radius
    necrosis_fraction: float    # radius of the necrotic core as a fraction of the tumour (0 = none)
    ct_delta_hu: float
    heterogeneity_hu: float
    rim_hu: float               # enhancing pseudo-capsule (0 = none)
    fdg_ratio: float            # tumour-to-liver SUV ratio
    act_ratio: float
    differentiation: float = 1.5  # latent continuous grade of this nodule (0-3), see GRADE_CENTRES; with a
    #                               focus, the focus's (the worst part, which pathology grades)
    focus: Focus | None = None

    @property
    def reach(self) -> float:
        """Radius of a sphere around the centre that contains the whole tumour."""
        return float(self.axes.max() * (1.0 + self.irregularity))


@dataclass(frozen=True)
class Anatomy:
    """Organ geometry of one patient (all mm, patient frame)."""

    body_axes: tuple[float, float]          # x, y semi-axes of the body outline
    fat_mm: float                           # subcutaneous fat thickness
    wall_mm: float                          # abdominal wall muscle thickness
    spine_y: float
    spine_radius: float
    disc_period: float
    disc_phase: float
    aorta: tuple[float, float, float]       # x, y, radius
    kidney_centres: np.ndarray              # (2, 3)
    kidney_axes: np.ndarray                 # (2, 3)
    spleen_centre: np.ndarray
    spleen_axes: np.ndarray
    lung_centres: np.ndarray                # (2, 3)
    lung_axes: np.ndarray                   # (2, 3)
    liver_centre: np.ndarray
    liver_axes: np.ndarray
    liver_taper: float                      # how much the left lobe thins towards the patient's left
    liver_waves: np.ndarray                 # (k, 3) low-frequency shape perturbation
    liver_wave_phases: np.ndarray           # (k, 3)
    liver_wave_amps: np.ndarray
    viscera_waves: np.ndarray               # (k, 3) texture separating bowel from visceral fat
    viscera_phases: np.ndarray              # (k, 2)
    tumours: tuple[Tumour, ...]
    differentiation: float = 1.5            # the patient's latent continuous grade (0-3)
    steatosis_hu: float = 0.0               # cohort v2: attenuation lost to fat (0 = none)
    cirrhosis_hu: float = 0.0               # cohort v2: sd of the nodular parenchymal texture (0 = none)

    @property
    def cavity_axes(self) -> tuple[float, float]:
        ax, ay = self.body_axes
        inset = self.fat_mm + self.wall_mm
        return ax - inset, ay - inset

    def breathing(self, dz: float) -> Anatomy:
        """The same patient with the abdominal organs shifted by `dz` mm along z (another breath hold).

        Spine, aorta and body wall are invariant along z, so every clearance used for tumour placement
        is kept exactly.
        """
        shift = np.array([0.0, 0.0, dz])
        return dataclasses.replace(
            self,
            kidney_centres=self.kidney_centres + shift, spleen_centre=self.spleen_centre + shift,
            lung_centres=self.lung_centres + shift, liver_centre=self.liver_centre + shift,
            tumours=tuple(dataclasses.replace(t, centre=t.centre + shift) for t in self.tumours))


def _random_waves(rng: np.random.Generator, k: int, wavelength: tuple[float, float]) -> np.ndarray:
    directions = rng.normal(size=(k, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return directions * (2 * np.pi / rng.uniform(*wavelength, size=(k, 1)))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def grade_property(table: tuple[float, float, float], differentiation: float) -> float:
    """A property given at the grade centres (d = 0.5, 1.5, 2.5), piecewise linear in d, extrapolated."""
    d = float(differentiation)
    low = 0 if d < GRADE_CENTRES[1] else 1
    slope = (table[low + 1] - table[low]) / (GRADE_CENTRES[low + 1] - GRADE_CENTRES[low])
    return float(table[low] + slope * (d - GRADE_CENTRES[low]))


def latent_differentiation(rng: np.random.Generator, recorded_grade: int) -> float:
    """The patient's continuous differentiation given the grade the pathologist recorded: anywhere in that
    grade's interval [g, g + 1), plus the reading error (READING_SD), so a case near a boundary may truly
    belong to the next grade."""
    d = recorded_grade + rng.uniform(0.0, 1.0) + rng.normal(0.0, READING_SD)
    return float(np.clip(d, *DIFFERENTIATION_RANGE))


def recorded_grade_posterior(differentiation: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """P(recorded grade | the patient's latent differentiation), (N, 3), for the generator's own model: the
    grade g drawn with probability ``prior`` (the cohort's grade shares), then d = g + U(0, 1) + N(0, READING_SD)
    clipped to DIFFERENTIATION_RANGE (``latent_differentiation``). The best any model of the images can do:
    the oracle teacher's targets. Inside the range the likelihood is the density of d given g; at a bound
    (where clipping piles mass) it is the probability of landing beyond it."""
    d = np.asarray(differentiation, dtype=np.float64)[:, None]
    grades = np.arange(3, dtype=np.float64)[None, :]
    s = READING_SD
    density = norm.cdf((d - grades) / s) - norm.cdf((d - grades - 1) / s)

    def below(x):  # P(g + U + N <= x) = s * (G((x - g) / s) - G((x - g - 1) / s)), G(t) = t Phi(t) + phi(t)
        def antiderivative(t):
            return t * norm.cdf(t) + norm.pdf(t)
        return s * (antiderivative((x - grades) / s) - antiderivative((x - grades - 1) / s))

    low, high = DIFFERENTIATION_RANGE
    likelihood = np.where(d <= low, below(low), np.where(d >= high, 1.0 - below(high), density))
    joint = np.clip(likelihood, 1e-300, None) * np.asarray(prior, dtype=np.float64)[None, :]
    return joint / joint.sum(axis=1, keepdims=True)


def true_grade(differentiation: float) -> int:
    """The grade a perfect reading would give: the interval of the latent differentiation."""
    return int(np.clip(np.floor(differentiation), 0, 2))


def sample_anatomy(rng: np.random.Generator, grade: int, world: World = WORLDS["v1"]) -> Anatomy:
    """Draw the organs of one patient, its latent differentiation given the recorded `grade`, then place 1-4
    tumours inside the liver whose phenotypes follow that differentiation (and, in cohort v2, the parenchyma)."""
    ax, ay = rng.uniform(128, 148), rng.uniform(92, 110)
    fat, wall = rng.uniform(8, 24), rng.uniform(8, 12)
    cav_x, cav_y = ax - fat - wall, ay - fat - wall
    spine_r = rng.uniform(15, 19)
    spine_y = cav_y * rng.uniform(0.40, 0.50)
    lx, ly, lz = rng.uniform(84, 96), rng.uniform(62, 74), rng.uniform(62, 70)
    # The right lobe fills the right upper quadrant (clipped by the body wall), the left lobe crosses the midline.
    liver_centre = np.array([-cav_x + 0.8 * lx + rng.uniform(-4, 6), rng.uniform(-18, -8), 0.0])
    kidney_axes = np.array([[rng.uniform(22, 26), rng.uniform(26, 30), rng.uniform(48, 56)]] * 2)
    kidney_x = spine_r + rng.uniform(42, 52)
    kidney_centres = np.array([[-kidney_x, spine_y + 8, -lz * 0.9 + rng.uniform(-8, 4)],   # right lies lower
                               [kidney_x, spine_y + 8, -lz * 0.75 + rng.uniform(-8, 4)]])
    spleen_axes = np.array([rng.uniform(22, 28), rng.uniform(40, 52), rng.uniform(40, 52)])
    spleen_centre = np.array([cav_x - spleen_axes[0] - 6, spine_y - 10, rng.uniform(5, 20)])
    lung_axes = np.array([[cav_x * 0.45, cav_y * 0.9, 90.0]] * 2)
    # Lung bases sit above the liver dome on the right (the liver overrides them) and a little lower on the left.
    lung_centres = np.array([[-cav_x * 0.5, 5.0, 0.45 * lz + 90], [cav_x * 0.5, 5.0, 0.6 * lz + 90]])
    anatomy = Anatomy(
        body_axes=(ax, ay), fat_mm=fat, wall_mm=wall, spine_y=spine_y, spine_radius=spine_r,
        disc_period=rng.uniform(30, 36), disc_phase=rng.uniform(0, 30),
        aorta=(rng.uniform(8, 16), spine_y - spine_r - rng.uniform(9, 13), rng.uniform(9, 12)),
        kidney_centres=kidney_centres, kidney_axes=kidney_axes,
        spleen_centre=spleen_centre, spleen_axes=spleen_axes,
        lung_centres=lung_centres, lung_axes=lung_axes,
        liver_centre=liver_centre, liver_axes=np.array([lx, ly, lz]), liver_taper=rng.uniform(0.45, 0.6),
        liver_waves=_random_waves(rng, 2, (120, 220)), liver_wave_phases=rng.uniform(0, 2 * np.pi, (2, 3)),
        liver_wave_amps=rng.uniform(0.02, 0.04, 2),
        viscera_waves=_random_waves(rng, 3, (35, 70)), viscera_phases=rng.uniform(0, 2 * np.pi, (3, 2)),
        tumours=())
    differentiation = latent_differentiation(rng, grade)
    tumours = _sample_tumours(rng, anatomy, differentiation, world, grade)
    anatomy = dataclasses.replace(anatomy, differentiation=differentiation, tumours=tumours)
    if world.clinical:
        steatosis = float(rng.uniform(*clinical.STEATOSIS_DROP_HU)) if rng.random() < clinical.STEATOSIS_P else 0.0
        cirrhosis = float(rng.uniform(*clinical.CIRRHOSIS_TEXTURE_HU)) if rng.random() < clinical.CIRRHOSIS_P else 0.0
        anatomy = dataclasses.replace(anatomy, steatosis_hu=steatosis, cirrhosis_hu=cirrhosis)
    return anatomy


def _liver_rho(anatomy: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Normalised radius of the tapered liver ellipsoid (1 on its surface); broadcasts over x, y, z."""
    cx, cy, cz = anatomy.liver_centre
    lx, ly, lz = anatomy.liver_axes
    dx = x - cx
    thinning = 1.0 - anatomy.liver_taper * np.clip(dx / lx, 0.0, 1.0)
    return np.sqrt((dx / lx) ** 2 + ((y - cy) / (ly * thinning)) ** 2 + ((z - cz) / (lz * thinning)) ** 2)


def liver_level(anatomy: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Implicit liver function, <= 1 inside: the tapered ellipsoid with a low-frequency shape wobble."""
    cx, cy, cz = anatomy.liver_centre
    # Products of 1D cosines: separable, so a broadcast over a volume costs a few multiplications.
    wobble = sum(a * np.cos(w[0] * (x - cx) + p[0]) * np.cos(w[1] * (y - cy) + p[1]) * np.cos(w[2] * (z - cz) + p[2])
                 for w, p, a in zip(anatomy.liver_waves, anatomy.liver_wave_phases, anatomy.liver_wave_amps))
    return _liver_rho(anatomy, x, y, z) / (1.0 + wobble)


def _liver_depth(anatomy: Anatomy, points: np.ndarray) -> np.ndarray:
    """Approximate depth (mm) of points below the liver surface, assuming the wobble at its most inward."""
    x, y, z = points.T
    lx, ly, lz = anatomy.liver_axes
    thinning = 1.0 - anatomy.liver_taper * np.clip((x - anatomy.liver_centre[0]) / lx, 0, 1)
    local_min = np.minimum(lx, min(ly, lz) * thinning)
    inner = 1.0 - float(np.sum(anatomy.liver_wave_amps))
    return (inner - _liver_rho(anatomy, x, y, z)) * local_min


def _ellipsoid_clearance(points: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Lower bound of the distance (mm) from points outside an axis-aligned ellipsoid to it."""
    rho = np.sqrt((((points - centre) / axes) ** 2).sum(axis=1))
    return (rho - 1.0) * axes.min()


def _clearance(anatomy: Anatomy, points: np.ndarray) -> np.ndarray:
    """Distance (mm, lower bound) from each point to anything a tumour must not touch."""
    x, y = points[:, 0], points[:, 1]
    cav_x, cav_y = anatomy.cavity_axes
    cavity = (1.0 - np.sqrt((x / cav_x) ** 2 + (y / cav_y) ** 2)) * min(cav_x, cav_y)
    # The spine with its posterior elements and paraspinal muscles fits in this circle.
    spine = np.hypot(x, y - anatomy.spine_y - 20) - (anatomy.spine_radius + 45)
    ax_, ay_, ar = anatomy.aorta
    aorta = np.hypot(x - ax_, y - ay_) - ar
    organs = [_ellipsoid_clearance(points, c, a) for c, a in zip(anatomy.kidney_centres, anatomy.kidney_axes)]
    organs.append(_ellipsoid_clearance(points, anatomy.spleen_centre, anatomy.spleen_axes))
    return np.minimum.reduce([_liver_depth(anatomy, points), cavity, spine, aorta, *organs])


def _sample_tumours(rng: np.random.Generator, anatomy: Anatomy, differentiation: float, world: World,
                    grade: int) -> tuple[Tumour, ...]:
    count = int(rng.choice(len(TUMOUR_COUNT_P), p=TUMOUR_COUNT_P)) + 1
    # A patient-level uptake offset makes the nodules of one liver alike, as in multifocal HCC.
    fdg_patient, act_patient = rng.normal(0.0, PATIENT_UPTAKE_LOG_SD, 2)
    lo = anatomy.liver_centre - anatomy.liver_axes
    hi = anatomy.liver_centre + anatomy.liver_axes
    candidates = rng.uniform(lo, hi, size=(4000, 3))
    clearance = _clearance(anatomy, candidates)
    tumours: list[Tumour] = []
    for index in range(count):
        d = float(np.clip(differentiation + rng.normal(0.0, NODULE_DIFFERENTIATION_SD), *DIFFERENTIATION_RANGE))
        log_radius = grade_property(tuple(np.log(TUMOUR_RADIUS_MM)), d)
        radius_sd = RADIUS_LOG_SD_V2 if world.clinical else RADIUS_LOG_SD
        radius = float(np.clip(np.exp(log_radius + rng.normal(0, radius_sd)),
                               MIN_TUMOUR_RADIUS_MM, MAX_TUMOUR_RADIUS_MM))
        irregularity = float(np.clip(rng.normal(grade_property(IRREGULARITY, d), IRREGULARITY_SD), 0.0, 0.25))
        stretch = rng.uniform(0.8, 1.2, 3)
        stretch /= np.cbrt(stretch.prod())
        necrotic = rng.random() < np.clip(grade_property(NECROSIS_PROBABILITY, d), 0.0, 1.0)
        heterogeneity = rng.normal(grade_property(HETEROGENEITY_HU, d), HETEROGENEITY_SD_HU)
        phenotype = dict(
            rotation=_random_rotation(rng), lobe_waves=_random_waves(rng, 3, (12, 30)),
            lobe_phases=rng.uniform(0, 2 * np.pi, 3), irregularity=irregularity,
            necrosis_fraction=float(rng.uniform(0.3, 0.55)) if necrotic else 0.0,
            ct_delta_hu=float(rng.normal(grade_property(CT_DELTA_HU, d), CT_DELTA_SD_HU)),
            heterogeneity_hu=float(np.clip(heterogeneity, 2, 25)),
            rim_hu=float(rng.uniform(8, 25)) if rng.random() < 0.5 else 0.0,
            fdg_ratio=float(np.exp(grade_property(tuple(np.log(FDG_TO_LIVER)), d)
                                   + fdg_patient + rng.normal(0, TUMOUR_UPTAKE_LOG_SD))),
            act_ratio=float(np.exp(grade_property(tuple(np.log(ACT_TO_LIVER)), d)
                                   + act_patient + rng.normal(0, TUMOUR_UPTAKE_LOG_SD))),
            differentiation=d)
        # Shrink the nodule until it fits somewhere with a margin of liver all around.
        for _ in range(8):
            axes = radius * stretch
            reach = float(axes.max() * (1 + irregularity))
            room = clearance.copy()
            for other in tumours:
                # 8 mm between nodules keeps them separate components on any of our grids.
                room = np.minimum(room, np.linalg.norm(candidates - other.centre, axis=1) - other.reach - 4.0)
            fits = np.flatnonzero(room >= reach + 4.0)
            if fits.size:
                break
            radius = max(radius * 0.8, MIN_TUMOUR_RADIUS_MM * 0.8)
        if not fits.size:
            if index == 0:  # cannot happen for the sampled anatomy ranges; keep a safe nodule anyway
                fits = np.array([int(np.argmax(clearance))])
                axes = np.full(3, MIN_TUMOUR_RADIUS_MM * 0.8)
            else:
                break
        centre = candidates[rng.choice(fits)]
        tumour = Tumour(centre=centre, axes=axes, **phenotype)
        if world.clinical:
            tumour = _clinical_phenotype(rng, tumour, world, grade, (fdg_patient, act_patient))
        tumours.append(tumour)
    return tuple(tumours)


def _clinical_phenotype(rng: np.random.Generator, tumour: Tumour, world: World, grade: int,
                        patient_offsets: tuple[float, float]) -> Tumour:
    """Cohort v2: a less differentiated focus in larger nodules (the nodule's sampled `differentiation` is
    its worst part; the rest is better differentiated), and tracer uptake by avidity (clinical.py), drawn
    per part so that large nodules can be hot on one tracer and cold on the other in places."""
    worst = tumour.differentiation
    radius = float(np.cbrt(np.prod(tumour.axes)))
    has_focus = radius >= clinical.FOCUS_MIN_RADIUS_MM and rng.random() < clinical.FOCUS_P
    base = float(np.clip(worst - rng.exponential(clinical.FOCUS_EXCESS), *DIFFERENTIATION_RANGE)) if has_focus \
        else worst
    offsets = [clinical.PATIENT_UPTAKE_LOG_SD / PATIENT_UPTAKE_LOG_SD * o for o in patient_offsets]

    def ratios(d: float) -> tuple[float, float]:
        if world.pet_from_recorded_grade:  # uptake knows the recorded grade only (and a size it implies)
            d, diameter = grade + 0.5, 2 * TUMOUR_RADIUS_MM[grade] / 10
        else:
            diameter = 2 * radius / 10
        return tuple(clinical.tumour_to_liver(rng, tracer, diameter, d, offset)
                     for tracer, offset in zip(("fdg", "act"), offsets))

    fdg, act = ratios(base)
    focus = None
    if has_focus:
        direction = rng.normal(size=3)
        offset = direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.4) * radius
        focus_fdg, focus_act = ratios(worst)
        focus = Focus(offset=offset, radius=float(rng.uniform(*clinical.FOCUS_RADIUS_FRACTION) * radius),
                      differentiation=worst,
                      ct_delta_hu=float(rng.normal(grade_property(CT_DELTA_HU, worst), CT_DELTA_SD_HU)),
                      heterogeneity_hu=float(np.clip(rng.normal(grade_property(HETEROGENEITY_HU, worst),
                                                                HETEROGENEITY_SD_HU), 2, 25)),
                      fdg_ratio=focus_fdg, act_ratio=focus_act)
        # the rest of the nodule is better differentiated: its attenuation and texture follow `base`
        tumour = dataclasses.replace(
            tumour, ct_delta_hu=float(rng.normal(grade_property(CT_DELTA_HU, base), CT_DELTA_SD_HU)),
            heterogeneity_hu=float(np.clip(rng.normal(grade_property(HETEROGENEITY_HU, base), HETEROGENEITY_SD_HU),
                                           2, 25)))
    return dataclasses.replace(tumour, fdg_ratio=fdg, act_ratio=act, focus=focus)
