"""Low-dose CT simulator: projector accuracy, physics round trip, dose-noise law, determinism, geometry, API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.ndimage import gaussian_filter

from reactkd.errors import ConfigError, GeometryError
from reactkd.images.geometry import Geometry
from reactkd.ldct.projector import ParallelBeamProjector, get_projector
from reactkd.ldct.simulator import (
    DEFAULT_I0,
    EXACT_POISSON_BELOW,
    MU_WATER_PER_MM,
    hu_to_mu,
    log_noise,
    mu_to_hu,
    sample_seeds,
    simulate_low_dose,
    simulate_low_dose_image,
)

OBLIQUE = (0.9961947, -0.0871557, 0.0, 0.0871557, 0.9961947, 0.0, 0.0, 0.0, 1.0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coords(h: int, w: int, spacing=(1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Physical (x, y) in mm of every pixel, relative to the rotation centre (h // 2, w // 2)."""
    y, x = torch.meshgrid((torch.arange(h) - h // 2).double() * spacing[1],
                          (torch.arange(w) - w // 2).double() * spacing[0], indexing="ij")
    return x, y


def abdomen(h: int, w: int, blur_px: float = 1.0) -> torch.Tensor:
    """Body ellipse (40 HU) with a lesion, a bone and fat, blurred like a scanner's point spread."""
    x, y = coords(h, w)
    hu = torch.full((h, w), -1000.0, dtype=torch.float64)
    hu[(x / (0.43 * w)) ** 2 + (y / (0.31 * h)) ** 2 <= 1] = 40
    hu[(x - 0.12 * w) ** 2 + (y + 0.04 * h) ** 2 <= (0.08 * w) ** 2] = 120
    hu[(x + 0.2 * w) ** 2 + (y - 0.08 * h) ** 2 <= (0.05 * w) ** 2] = 700
    hu[(x + 0.04 * w) ** 2 + (y - 0.16 * h) ** 2 <= (0.055 * w) ** 2] = -100
    return torch.from_numpy(gaussian_filter(hu.numpy(), blur_px)).float()


def water_disc(depth: int, size: int, radius_px: int) -> torch.Tensor:
    x, y = coords(size, size)
    return torch.where(x ** 2 + y ** 2 <= radius_px ** 2, 0.0, -1000.0).float().expand(depth, size, size).clone()


def exact_projection(proj: ParallelBeamProjector, mu: torch.Tensor) -> torch.Tensor:
    """Same band-limited model evaluated by a direct (slow, exact) Fourier transform: the NUFFT reference."""
    sx, sy = proj.spacing_mm
    x, y = coords(proj.height, proj.width, (sx, sy))
    m, dt = proj._m_fwd, proj.detector_spacing_mm
    freq = torch.fft.fftfreq(m, d=dt, dtype=torch.float64)
    u = freq[None, :, None] * torch.cos(proj.angles)[:, None, None]
    v = freq[None, :, None] * torch.sin(proj.angles)[:, None, None]
    phase = torch.exp(-2j * math.pi * (u * x.reshape(1, 1, -1) + v * y.reshape(1, 1, -1)))
    spectrum = torch.einsum("amp,np->nam", phase, mu.double().reshape(len(mu), -1).to(torch.complex128)) * sx * sy
    spectrum[..., m // 2] = 0
    sino = torch.fft.ifft(spectrum, dim=-1).real / dt
    half = proj.n_detectors // 2
    return torch.cat([sino[..., m - half:], sino[..., :proj.n_detectors - half]], dim=-1)


@pytest.mark.parametrize("shape,spacing", [((20, 24), (0.8, 0.8)), ((17, 15), (0.7, 0.9))])
def test_projector_matches_exact_fourier_slice(shape, spacing):
    proj = ParallelBeamProjector(*shape, spacing, 12)
    mu = torch.rand(3, *shape, generator=gen(0)) * 0.02
    sino = proj.project(mu)
    reference = exact_projection(proj, mu)
    assert sino.shape == (3, 12, proj.n_detectors)
    assert float((sino.double() - reference).norm() / reference.norm()) < 3e-3
    # physical units: every projection integrates to the slice's total attenuation (pixel area in mm^2), up to
    # the band-limited model's ringing outside the detector (largest with anisotropic pixels)
    totals = sino.sum(-1) * proj.detector_spacing_mm
    expected = mu.sum((-2, -1)) * spacing[0] * spacing[1]
    torch.testing.assert_close(totals, expected[:, None].expand_as(totals), rtol=1e-2, atol=0)


def test_line_integral_through_a_disc_is_its_chord():
    proj = ParallelBeamProjector(96, 96, (0.7, 0.7), 16)
    disc = water_disc(1, 96, 30)
    sino = proj.project(hu_to_mu(disc))
    centre = sino[0, :, proj.n_detectors // 2]
    torch.testing.assert_close(centre, torch.full_like(centre, 2 * 30 * 0.7 * MU_WATER_PER_MM), rtol=0.02, atol=0)


def test_noiseless_round_trip_recovers_the_slice_inside_the_body():
    hu = abdomen(128, 128)
    x, y = coords(128, 128)
    inside = (x / (0.40 * 128)) ** 2 + (y / (0.28 * 128)) ** 2 <= 1
    proj = get_projector(128, 128, (1.5, 1.5), 256)
    recon = mu_to_hu(proj.fbp(proj.project(hu_to_mu(hu)[None]), "ramp"))[0]
    error = (recon - hu)[inside].abs()
    # measured: max 2.2 HU, mean 0.6 HU (band-limiting and the 1e-3 NUFFT error)
    assert float(error.max()) < 5 and float(error.mean()) < 1.5
    # the public "direct" physics path with a practically noise-free dose gives the same reconstruction
    direct = simulate_low_dose(hu, (1.5, 1.5), 1.0, i0=1e15, n_angles=256, window="ramp", reconstruction="direct")
    assert float((direct - recon).abs().max()) < 0.05


def test_difference_mode_adds_exactly_the_fbp_of_the_sinogram_noise():
    hu = abdomen(64, 64)[None].repeat(3, 1, 1)
    kw = dict(spacing_mm=(1.0, 1.0), dose=0.3, seed=5, n_angles=96, window="shepp-logan")
    direct = simulate_low_dose(hu, reconstruction="direct", **kw)
    difference = simulate_low_dose(hu, **kw)
    proj = get_projector(64, 64, (1.0, 1.0), 96)
    round_trip = mu_to_hu(proj.fbp(proj.project(hu_to_mu(hu)), "shepp-logan"))
    assert float((difference - hu).std()) > 1  # noise was added
    torch.testing.assert_close(direct - difference, round_trip - hu, atol=0.05, rtol=0)


def centre_noise(out: torch.Tensor, ct: torch.Tensor, radius_px: int) -> float:
    x, y = coords(*ct.shape[-2:])
    return float((out - ct)[..., x ** 2 + y ** 2 <= radius_px ** 2].std())


def test_noise_std_scales_like_inverse_sqrt_dose():
    ct = water_disc(6, 96, 40)
    doses = (1.0, 0.5, 0.1)
    # independent seeds: with one seed the Gaussian-limit noise fields would be exact rescalings of each other
    stds = [centre_noise(simulate_low_dose(ct, (1.5, 1.5), d, seed=30 + i), ct, 20) for i, d in enumerate(doses)]
    normalised = [s * math.sqrt(d) for s, d in zip(stds, doses)]
    assert stds[0] > 0.5
    assert max(normalised) / min(normalised) < 1.15, (stds, normalised)


def test_full_dose_input_gets_only_the_missing_variance():
    ct = water_disc(6, 96, 40)
    full = centre_noise(simulate_low_dose(ct, (1.5, 1.5), 1.0, seed=3), ct, 20)
    for dose in (0.5, 0.2):
        added = centre_noise(simulate_low_dose(ct, (1.5, 1.5), dose, seed=3, input_is_full_dose=True), ct, 20)
        assert added == pytest.approx(full * math.sqrt(1 / dose - 1), rel=0.15)
    assert torch.equal(simulate_low_dose(ct, (1.5, 1.5), 1.0, input_is_full_dose=True), ct)


def test_electronic_noise_adds_variance():
    ct = water_disc(2, 64, 26)
    quiet = centre_noise(simulate_low_dose(ct, (1.0, 1.0), 0.1, seed=1), ct, 12)
    noisy = centre_noise(simulate_low_dose(ct, (1.0, 1.0), 0.1, seed=1, electronic_noise=2000.0), ct, 12)
    assert noisy > 1.2 * quiet


def test_log_noise_uses_poisson_counts_at_low_flux_and_matches_its_variance():
    p = torch.zeros(200_000)
    for incident in (40.0, 5e4):
        noise = log_noise(p, incident, 0.0, gen(2))
        assert float(noise.var()) == pytest.approx(1 / incident, rel=0.08)
    counts = 40.0 * torch.exp(-log_noise(p[:1000], 40.0, 0.0, gen(3)))
    assert 40.0 < EXACT_POISSON_BELOW
    torch.testing.assert_close(counts, counts.round(), atol=1e-3, rtol=0)  # whole photons


def test_deterministic_per_seed():
    ct = abdomen(48, 48)[None].repeat(3, 1, 1)
    a = simulate_low_dose(ct, (1.0, 1.0), 0.25, seed=11)
    b = simulate_low_dose(ct, (1.0, 1.0), 0.25, seed=11)
    c = simulate_low_dose(ct, (1.0, 1.0), 0.25, seed=12)
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1
    assert a.shape == ct.shape and a.dtype == ct.dtype


def test_shapes_2d_and_4d():
    ct = abdomen(40, 36)
    single = simulate_low_dose(ct, (1.0, 1.2), 0.5, seed=4)
    assert single.shape == ct.shape
    torch.testing.assert_close(single, simulate_low_dose(ct[None], (1.0, 1.2), 0.5, seed=4)[0])
    batch = ct[None, None].repeat(2, 3, 1, 1)
    out = simulate_low_dose(batch, (1.0, 1.2), 0.5, seed=9)
    seeds = sample_seeds(gen(9), 2)
    for b in range(2):
        torch.testing.assert_close(out[b], simulate_low_dose(batch[b], (1.0, 1.2), 0.5, seed=seeds[b]),
                                   atol=1e-3, rtol=0)


def test_image_wrapper_keeps_geometry_and_uses_in_plane_spacing():
    hu = abdomen(48, 40).numpy()[None].repeat(4, 0)
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-12.0, 30.5, 101.0))
    image.SetDirection(OBLIQUE)
    out = simulate_low_dose_image(image, 0.25, seed=2)
    assert Geometry.of(out).same_as(Geometry.of(image), tol=0)
    assert out.GetPixelID() == sitk.sitkFloat32
    expected = simulate_low_dose(torch.from_numpy(hu.astype(np.int16).astype(np.float32)), (0.8, 0.9), 0.25, seed=2)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), expected.numpy())


def test_command_line_writes_the_missing_noise_on_the_ct_grid(tmp_path, capsys):
    from reactkd.cli.main import main
    from reactkd.images.readers import read_image
    from reactkd.images.writers import write_image

    hu = abdomen(48, 40).numpy()[None].repeat(3, 0).astype(np.int16)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-12.0, 30.5, 101.0))
    image.SetDirection(OBLIQUE)
    write_image(image, tmp_path / "ct.nrrd")
    command = ["simulate-ldct", "--ct", str(tmp_path / "ct.nrrd"), "--dose", "0.25", "--seed", "4", "--out"]
    assert main([*command, str(tmp_path / "low.nrrd")]) == 0
    assert "wrote" in capsys.readouterr().out
    written = read_image(tmp_path / "low.nrrd")
    assert Geometry.of(written).same_as(Geometry.of(image), tol=1e-9)
    # A real scan already carries full-dose noise: the command adds only what the lower dose is missing.
    expected = simulate_low_dose_image(image, 0.25, seed=4, input_is_full_dose=True)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected))
    assert not np.array_equal(sitk.GetArrayFromImage(written), hu.astype(np.float32))
    assert main([*command, str(tmp_path / "again.nrrd")]) == 0  # one seed, one image
    assert (tmp_path / "again.nrrd").read_bytes() == (tmp_path / "low.nrrd").read_bytes()


@pytest.mark.parametrize("dose", [0, -0.5, 1.01, float("nan"), float("inf"), "half", None])
def test_bad_dose_is_refused(dose):
    ct = torch.zeros(8, 8)
    with pytest.raises(ConfigError):
        simulate_low_dose(ct, (1.0, 1.0), dose)
    image = sitk.GetImageFromArray(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ConfigError):
        simulate_low_dose_image(image, dose)


def test_bad_options_are_refused():
    ct = torch.zeros(2, 16, 16)
    for kw in (dict(window="parzen"), dict(reconstruction="iterative"), dict(i0=0.0), dict(n_angles=3),
               dict(electronic_noise=-1.0)):
        with pytest.raises(ConfigError):
            simulate_low_dose(ct, (1.0, 1.0), 0.5, **kw)
    with pytest.raises(GeometryError):
        simulate_low_dose(ct, (0.0, 1.0), 0.5)
    with pytest.raises(GeometryError):
        simulate_low_dose(ct[None, None], (1.0, 1.0), 0.5)


@pytest.mark.slow
def test_full_dose_noise_calibration():
    """DEFAULT_I0: about 10 HU at the centre of a 350 mm x 250 mm water ellipse on 0.7 mm pixels (measured 10.1)."""
    x, y = coords(512, 512, (0.7, 0.7))
    ct = torch.where((x / 175) ** 2 + (y / 125) ** 2 <= 1, 0.0, -1000.0).float().expand(4, 512, 512).clone()
    out = simulate_low_dose(ct, (0.7, 0.7), 1.0, seed=1, i0=DEFAULT_I0)
    noise = float((out - ct)[:, x ** 2 + y ** 2 <= 30 ** 2].std())
    assert 8.5 < noise < 11.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    hu = abdomen(96, 96)[None].repeat(3, 1, 1)
    recon = {}
    for device in ("cpu", "cuda"):
        proj = get_projector(96, 96, (1.0, 1.0), 128, device)
        recon[device] = proj.fbp(proj.project(hu_to_mu(hu).to(device)), "ramp").cpu()
    torch.testing.assert_close(recon["cuda"], recon["cpu"], atol=2e-6, rtol=1e-3)
    ct = water_disc(6, 96, 40)
    stds = [centre_noise(simulate_low_dose(ct.to(d), (1.5, 1.5), 0.25, seed=3).cpu(), ct, 20) for d in ("cpu", "cuda")]
    assert stds[1] == pytest.approx(stds[0], rel=0.15)
