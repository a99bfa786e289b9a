"""Parameters of cohort v2 (and its null variant), each with its source; fixed before any model saw v2.

docs/synthetic-cohort.md lists them as a table. Values that no source gives (marked "assumed") are stated as
such and were not tuned to any model's score.
"""

from __future__ import annotations

import numpy as np

from reactkd.cohort.synth.tissues import Tissue

T = Tissue

# --- CT: one portal-venous phase (Bae, Radiology 2010;256:32-61: hepatic enhancement peaks about 60-80 s
# after injection, at about +50 HU over the unenhanced liver). Unenhanced values (mean, sd between scans) and
# the enhancement at the phase's peak; every organ's enhancement follows one per-scan timing factor.
UNENHANCED_HU = {T.AIR: (-1000, 0), T.SUBCUT_FAT: (-100, 8), T.MUSCLE: (50, 5), T.VISCERA: (35, 8),
                 T.VISCERAL_FAT: (-95, 8), T.CORTICAL_BONE: (800, 120), T.CANCELLOUS_BONE: (230, 40),
                 T.DISC: (85, 10), T.CANAL: (20, 5), T.AORTA: (40, 5), T.KIDNEY: (35, 5), T.SPLEEN: (50, 5),
                 T.LUNG: (-850, 30), T.LIVER: (58, 6)}
PORTAL_VENOUS_ENHANCEMENT_HU = {T.MUSCLE: 10.0, T.VISCERA: 25.0, T.AORTA: 130.0, T.KIDNEY: 140.0, T.SPLEEN: 65.0,
                                T.LIVER: 50.0, T.DISC: 5.0}
#: Scan timing within the phase: the liver plateaus while the aorta washes out (Bae 2010, fig. 5 shape).
PHASE_DELAY_S = (60.0, 90.0)
AORTA_LOSS_PER_S = 0.008          # fraction of aortic enhancement lost per second after 60 s (assumed)
#: Patient-level enhancement (cardiac output, weight, contrast dose per kg; assumed spread).
ENHANCEMENT_SCALE = (0.8, 1.15)

# --- Parenchyma. HCC arises in a cirrhotic liver in 80-90 % of patients (El-Serag, N Engl J Med
# 2011;365:1118-27); fatty liver lowers attenuation by tens of HU (Kodama et al., AJR 2007;188:1307-12).
CIRRHOSIS_P = 0.8
CIRRHOSIS_TEXTURE_HU = (4.0, 9.0)  # sd of a nodular texture (regenerative nodules, assumed amplitude)
CIRRHOSIS_NODULE_MM = 3.0          # correlation length of that texture (nodules of 3-10 mm)
STEATOSIS_P = 0.25
STEATOSIS_DROP_HU = (8.0, 30.0)

# --- Grade heterogeneity. A nodule is graded by its least differentiated area (WHO Classification of
# Digestive System Tumours, 5th ed., 2019); the recorded grade is that worst focus read with the observer
# error of the v1 cohort (Pirisi et al., Arch Pathol Lab Med 2010; READING_SD in anatomy.py).
FOCUS_MIN_RADIUS_MM = 14.0         # nodules at least this large may hold a less differentiated focus (assumed)
FOCUS_P = 0.6
FOCUS_EXCESS = 0.6                 # mean of the exponential excess of the focus over the rest (grade units)
FOCUS_RADIUS_FRACTION = (0.35, 0.6)

# --- PET (Park et al., J Nucl Med 2008;49:1912-21, 112 patients): sensitivity for primary HCC by size.
# Diameters (cm) at the geometric centres of the bins 1-2, 2-5 and >= 5 cm; interpolated in log size.
AVIDITY_DIAMETER_CM = (1.4, 3.2, 7.0)
FDG_AVIDITY = (0.27, 0.48, 0.93)
ACT_AVIDITY = (0.32, 0.78, 0.95)
#: Grade dependence (log-odds per grade unit of the nodule's differentiation, centred on moderate):
#: FDG detects poorly differentiated HCC better, 11C-acetate well differentiated HCC (Park 2008; Ho et al.,
#: J Nucl Med 2003;44:213-21). The slope is assumed (neither gives it per grade and size).
FDG_GRADE_LOGODDS = 0.9
ACT_GRADE_LOGODDS = -0.9
#: Tumour-to-liver SUV ratio: log-normal (median, log sd) for avid and non-avid tumours. Larsson et al.
#: (Mol Imaging Radionucl Ther 2012) report median ratios 1.0 (FDG) and 1.4 (acetate) over all lesions.
AVID_TO_LIVER = {"fdg": (1.7, 0.30), "act": (1.8, 0.25)}
NON_AVID_TO_LIVER = (0.92, 0.10)
PATIENT_UPTAKE_LOG_SD = 0.08       # tumours of one liver alike (assumed)
#: Liver SUVmean: 1.7 (FDG) and 3.2 (acetate) in Larsson 2012; per-scan spread assumed.
LIVER_FDG_SUV = (1.4, 2.1)
LIVER_ACT_SUV = (2.6, 3.8)


def avidity_probability(tracer: str, diameter_cm: float, differentiation: float) -> float:
    """P(a nodule of this size and differentiation is avid for `tracer`): Park 2008 by size at moderate
    differentiation, shifted in log-odds by the grade."""
    table, slope = (FDG_AVIDITY, FDG_GRADE_LOGODDS) if tracer == "fdg" else (ACT_AVIDITY, ACT_GRADE_LOGODDS)
    logits = np.log(np.array(table) / (1 - np.array(table)))
    at_size = np.interp(np.log(max(diameter_cm, 1e-3)), np.log(AVIDITY_DIAMETER_CM), logits)
    return float(1 / (1 + np.exp(-(at_size + slope * (differentiation - 1.5)))))


def tumour_to_liver(rng: np.random.Generator, tracer: str, diameter_cm: float, differentiation: float,
                    patient_offset: float) -> float:
    """One tumour-to-liver SUV ratio: avid or not by `avidity_probability`, then log-normal."""
    avid = rng.random() < avidity_probability(tracer, diameter_cm, differentiation)
    median, log_sd = AVID_TO_LIVER[tracer] if avid else NON_AVID_TO_LIVER
    return float(np.exp(np.log(median) + rng.normal(0.0, log_sd) + patient_offset))
