"""Low-dose CT simulation from a full-dose CT (METHOD.md, "Low-dose CT simulation").

Per axial slice: HU -> linear attenuation mu = MU_WATER * (1 + HU / 1000) (>= 0) -> parallel-beam sinogram of
line integrals p (physical mm, see `reactkd.ldct.projector`) -> expected counts lam = I0 * dose * exp(-p) -> Poisson
counts (plus optional Gaussian electronic noise), clamped at MIN_COUNTS -> p_noisy = -log(counts / (I0 * dose))
-> filtered back-projection -> HU. All slices of a volume go through the projector in chunks, as one batch.

Reconstruction (`reconstruction=`):
- "difference" (default): return ct + FBP(p_noisy - p) in HU. FBP is linear, so this equals
  ct + FBP(p_noisy) - FBP(p): the noise has the structure of a real acquisition (spatially varying variance
  from exp(p), ramp-filtered texture, streaks along highly attenuating paths) while the anatomy keeps the
  input's resolution. Reconstructing directly would add the projector's own blur and discretisation error
  (band-limiting, Gibbs ringing at sharp edges) to every image, which the model would learn as "low dose".
- "direct": return FBP(p_noisy) in HU, the whole physical chain; used to test the chain.

Dose model. `i0` is the number of photons per ray per view at full dose for a 1 mm detector bin and 1000
views over 180 degrees. A simulation with detector bins of width dt (= the in-plane pixel spacing) and n views
uses i0 * dose * (dt / 1 mm) * (1000 / n) photons per ray: the fluence per area and per rotation is what
a dose fixes, so the image noise does not depend on the number of views and grows like dt^-1.5 with finer
pixels, as on a scanner. Slice thickness is not modelled (each slice is an independent 2D acquisition).
DEFAULT_I0 is calibrated so that a full-dose (dose 1.0) simulation of a uniform water ellipse 350 mm wide
(250 mm deep) on 0.7 mm pixels, reconstructed with the default Hann window, has about 10 HU of noise at its
centre, as a clinical abdominal CT (measured in Testing/test_ldct.py::test_full_dose_noise_calibration).

Input noise. By default the input is treated as noise-free, so dose 1.0 adds the full-dose noise and the
added noise scales like 1/sqrt(dose). A real CT already carries full-dose noise; with
`input_is_full_dose=True` only the missing variance (1/dose - 1 times the full-dose variance) is added, so the
result has the noise of a dose-`dose` scan and dose 1.0 returns the input unchanged (`reactkd.cohort.doses`,
`simulate-ldct` and `evaluate --doses` do this).

Randomness: Poisson draws for expected counts below EXACT_POISSON_BELOW, and the Gaussian limit
lam + sqrt(lam) z above it (same mean and variance; torch.poisson is ~10x slower than randn on CPU and the
shape difference is invisible after FBP sums hundreds of rays). Results are deterministic per seed and device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from reactkd.errors import ConfigError, GeometryError, ReactKDError
from reactkd.images.geometry import from_numpy, to_numpy
from reactkd.ldct.projector import MIN_ANGLES, WINDOWS, get_projector, pack_pairs

#: Linear attenuation of water at 70 keV, 1/mm: NIST XCOM mass attenuation 0.2059 cm^2/g (60 keV) and
#: 0.1837 cm^2/g (80 keV), log-log interpolated to 0.1937 cm^2/g, times 1 g/cm^3.
MU_WATER_PER_MM = 0.01937
REFERENCE_DETECTOR_MM = 1.0
REFERENCE_VIEWS = 1000
#: Photons per ray per view at full dose for a 1 mm bin and 1000 views (calibrated, see module docstring).
DEFAULT_I0 = 2.0e6
DEFAULT_WINDOW = "hann"  # close to a soft-tissue ("standard") clinical kernel
EXACT_POISSON_BELOW = 100.0
MIN_COUNTS = 1.0
RECONSTRUCTIONS = ("difference", "direct")
#: Bumped whenever a change alters simulated images (dose caches record it and refuse another version).
SIMULATOR_VERSION = 1


def hu_to_mu(hu: torch.Tensor) -> torch.Tensor:
    """Hounsfield units -> linear attenuation in 1/mm (air and below -> 0)."""
    return (MU_WATER_PER_MM * (1 + hu / 1000)).clamp_min(0)


def mu_to_hu(mu: torch.Tensor) -> torch.Tensor:
    """Linear attenuation in 1/mm -> Hounsfield units."""
    return 1000 * (mu / MU_WATER_PER_MM - 1)


def counts_per_ray(i0: float, detector_mm: float, n_angles: int) -> float:
    """Full-dose photons per ray per view for this detector bin width and number of views."""
    return i0 * (detector_mm / REFERENCE_DETECTOR_MM) * (REFERENCE_VIEWS / n_angles)


def log_noise(line_integrals: torch.Tensor, incident: float, electronic_noise: float,
              generator: torch.Generator) -> torch.Tensor:
    """Noise p_noisy - p of measured line integrals with `incident` photons per ray (quantum + electronic)."""
    lam = torch.exp(-line_integrals).mul_(incident).clamp_min_(1e-20)
    z = torch.randn(lam.shape, generator=generator, device=lam.device, dtype=lam.dtype)
    counts = torch.addcmul(lam, z, (lam + electronic_noise ** 2).sqrt_())
    low = lam < EXACT_POISSON_BELOW
    if bool(low.any()):
        counts[low] = torch.poisson(lam[low], generator=generator) + electronic_noise * z[low]
    return counts.clamp_min_(MIN_COUNTS).div_(lam).log_().neg_()


def sample_seeds(generator: torch.Generator, count: int) -> list[int]:
    """One seed per sample, drawn from `generator` (how batched calls derive their per-sample streams)."""
    return torch.randint(0, 2 ** 62, (count,), generator=generator, device=generator.device).tolist()


@dataclass(frozen=True)
class _Options:
    i0: float
    electronic_noise: float
    n_angles: int | None
    window: str
    reconstruction: str
    input_is_full_dose: bool

    def validate(self) -> _Options:
        if not (math.isfinite(self.i0) and self.i0 > 0):
            raise ConfigError(f"i0 must be a positive number of photons, got {self.i0}")
        if not (math.isfinite(self.electronic_noise) and self.electronic_noise >= 0):
            raise ConfigError(f"electronic_noise must be >= 0 photons, got {self.electronic_noise}")
        if self.window not in WINDOWS:
            raise ConfigError(f"unknown FBP window {self.window!r}; choose one of {', '.join(WINDOWS)}")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ConfigError(f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, "
                              f"got {self.reconstruction!r}")
        return self

    def noise_counts(self, dose: float, full_dose_counts: float) -> tuple[float, float]:
        """(photons per ray, electronic std) of the noise to draw, or (inf, 0) when none is needed."""
        if not self.input_is_full_dose:
            return full_dose_counts * dose, self.electronic_noise
        if dose >= 1:
            return math.inf, 0.0
        # variance of dose d minus the full-dose variance already in the input, per source
        return (full_dose_counts * dose / (1 - dose),
                self.electronic_noise * math.sqrt((1 + dose) / (1 - dose)))


@dataclass(frozen=True)
class _Job:
    index: int
    dose: float
    generator: torch.Generator


def check_dose(dose: float) -> float:
    """`dose` as a float in (0, 1]; ConfigError otherwise."""
    try:
        value = float(dose)
    except (TypeError, ValueError):
        raise ConfigError(f"dose must be a number in (0, 1], got {dose!r}") from None
    if not (0 < value <= 1):
        raise ConfigError(f"dose must be a fraction of the full dose in (0, 1], got {dose!r}")
    return value


def _numbers(values, width: int) -> list[list[float]]:
    """Rows of `width` floats from a number, sequence or tensor; [] if it is not one."""
    try:
        return torch.as_tensor(values, dtype=torch.float64).reshape(-1, width).tolist()
    except (TypeError, ValueError, RuntimeError):
        return []


def _check_spacing(spacing_mm) -> tuple[float, float]:
    values = [v for row in _numbers(spacing_mm, 2)[:2] for v in row]
    if len(values) != 2 or not all(math.isfinite(s) and s > 0 for s in values):
        raise GeometryError(f"in-plane spacing must be two positive numbers (x, y) in mm, got {spacing_mm!r}")
    return values[0], values[1]


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def _simulate(ct: torch.Tensor, jobs: list[_Job], spacing: tuple[float, float], options: _Options,
              out: torch.Tensor) -> None:
    """Write the simulated samples of `jobs` (all sharing `spacing`) of ct (B, D, H, W) into `out`."""
    _, depth, height, width = ct.shape
    n_angles = int(options.n_angles or max(height, width))  # ~ a clinical scanner's views per 180 degrees
    projector = get_projector(height, width, spacing, n_angles, ct.device)
    step = projector.slices_per_chunk()
    full_counts = counts_per_ray(options.i0, projector.detector_spacing_mm, n_angles)
    # Pieces start at each sample's first slice and own whole slice pairs (odd ones get a blank partner), so
    # a sample's random stream and arithmetic are the same whether it is simulated alone or in a batch.
    pieces = [(job, start, min(start + step, depth)) for job in jobs for start in range(0, depth, step)]
    chunks: list[list[tuple[_Job, int, int]]] = []
    filled = step
    for job, start, stop in pieces:
        slices = stop - start + (stop - start) % 2
        if filled + slices > step:
            chunks.append([])
            filled = 0
        chunks[-1].append((job, start, stop))
        filled += slices
    scale = 1000 / MU_WATER_PER_MM
    for chunk in chunks:
        mu = torch.cat([pack_pairs(hu_to_mu(ct[job.index, s:e].float())) for job, s, e in chunk])
        sinogram = projector.project_pairs(mu)  # (pairs, angles, detectors) complex, contiguous
        noise, first = torch.zeros_like(torch.view_as_real(sinogram)), 0
        for job, s, e in chunk:
            last = first + (e - s + 1) // 2
            incident, electronic = options.noise_counts(job.dose, full_counts)
            if math.isfinite(incident):
                noise[first:last] = log_noise(torch.view_as_real(sinogram[first:last]), incident, electronic,
                                              job.generator)
            first = last
        noise = torch.view_as_complex(noise)
        direct = options.reconstruction == "direct"
        image = projector.fbp_pairs(sinogram + noise if direct else noise, options.window)
        first = 0
        for job, s, e in chunk:
            last = first + (e - s + 1) // 2
            for part, start in ((image[first:last].real, s), (image[first:last].imag, s + 1)):
                count = len(range(start, e, 2))
                target = ct[job.index, start:e:2].float()
                value = mu_to_hu(part[:count]) if direct else target + scale * part[:count]
                out[job.index, start:e:2] = value.to(out.dtype)
            first = last


def _as_batch(ct_hu: torch.Tensor, name: str = "ct_hu") -> torch.Tensor:
    if not isinstance(ct_hu, torch.Tensor) or not ct_hu.is_floating_point():
        raise ReactKDError(f"{name} must be a floating-point torch tensor")
    if ct_hu.dim() not in (2, 3, 4):
        raise GeometryError(f"{name} must be (H, W), (D, H, W) or (B, D, H, W), got shape {tuple(ct_hu.shape)}")
    if not bool(torch.isfinite(ct_hu).all()):
        raise ReactKDError(f"{name} contains NaN or infinite values")
    return ct_hu.reshape((1,) * (4 - ct_hu.dim()) + tuple(ct_hu.shape))


def simulate_low_dose(ct_hu: torch.Tensor, spacing_mm: tuple[float, float], dose: float, seed: int | None = 0,
                      i0: float = DEFAULT_I0, electronic_noise: float = 0.0, n_angles: int | None = None, *,
                      window: str = DEFAULT_WINDOW, reconstruction: str = "difference",
                      input_is_full_dose: bool = False) -> torch.Tensor:
    """Simulate a CT acquired at `dose` (fraction of full dose, in (0, 1]) from `ct_hu`.

    ct_hu: (H, W), (D, H, W) or (B, D, H, W) in HU, on any device; slices are the last two axes.
    spacing_mm: in-plane pixel spacing (x, y) in mm, ITK order (x along W, y along H).
    seed: fixes the noise (None: fresh randomness); a 4D batch draws one seed per sample from it.
    electronic_noise: std of Gaussian detector noise, in photons per ray reading.
    n_angles: views over 180 degrees (default max(H, W)).
    Returns a tensor of the input's shape, dtype and device.
    """
    dose = check_dose(dose)
    batch = _as_batch(ct_hu)
    options = _Options(float(i0), float(electronic_noise), n_angles, window, reconstruction,
                       bool(input_is_full_dose)).validate()
    spacing = _check_spacing(spacing_mm)
    if ct_hu.dim() == 4:
        seeds = sample_seeds(_generator(seed, torch.device("cpu")), batch.shape[0])
    else:
        seeds = [seed]
    out = batch.clone()
    if options.input_is_full_dose and dose >= 1 and reconstruction == "difference":
        return out.reshape(ct_hu.shape)
    jobs = [_Job(b, dose, _generator(s, batch.device)) for b, s in enumerate(seeds)]
    _simulate(batch, jobs, spacing, options, out)
    return out.reshape(ct_hu.shape)


#: Smallest slice the projector can handle: it takes as many views as the slice is wide, at least MIN_ANGLES.
MIN_SLICE_VOXELS = MIN_ANGLES


def simulate_low_dose_image(image: sitk.Image, dose: float, seed: int = 0, *, device: str | torch.device = "cpu",
                            **kw) -> sitk.Image:
    """Low-dose version of a CT image (HU), with the image's geometry kept exactly; float32 output.

    The in-plane spacing comes from the image; keyword options are those of `simulate_low_dose`.
    """
    width, height = image.GetSize()[:2]
    if min(width, height) < MIN_SLICE_VOXELS:
        raise GeometryError(f"the low-dose simulator needs slices of at least {MIN_SLICE_VOXELS} x {MIN_SLICE_VOXELS} "
                            f"voxels (it projects each slice); this CT's slices are {width} x {height}")
    array, geometry = to_numpy(image)
    ct = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)
    result = simulate_low_dose(ct, geometry.spacing[:2], dose, seed, **kw)
    return from_numpy(result.cpu().numpy(), geometry)
