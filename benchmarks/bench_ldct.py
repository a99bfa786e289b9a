"""Benchmark the low-dose CT simulator's projector against scikit-image's radon/iradon, slice by slice.

Both run in the same process on the same noiseless phantom slices (an abdomen with a lesion, bone and fat,
blurred by 1 pixel like a scanner's point spread), with the same angles and the plain ramp filter. Reported:
wall time of projection + FBP for all slices (ours batched, scikit-image one slice at a time) and their ratio,
the difference between the two reconstructions and each one's round-trip error inside the body (HU), the
sinogram difference, and the time of a whole `simulate_low_dose` call.

    .venv/bin/python benchmarks/bench_ldct.py             # 256 x 256 x 16 slices, about a minute
    .venv/bin/python benchmarks/bench_ldct.py --full      # 512 x 512 x 150; scikit-image on --sk-slices slices,
                                                          # its time extrapolated to 150 (labelled as such)
    .venv/bin/python benchmarks/bench_ldct.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from skimage.transform import iradon, radon

from reactkd.ldct.projector import get_projector
from reactkd.ldct.simulator import hu_to_mu, mu_to_hu, simulate_low_dose


def phantom(size: int, depth: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """(depth, size, size) HU volume whose features drift along z, and the eroded body mask for errors."""
    c = np.arange(size) - size // 2
    y, x = np.meshgrid(c * spacing, c * spacing, indexing="ij")
    volume = np.empty((depth, size, size), np.float32)
    for z in range(depth):
        shift = 10 * np.sin(z / max(depth, 1) * np.pi)
        hu = np.full((size, size), -1000.0)
        hu[(x / 160) ** 2 + (y / 115) ** 2 <= 1] = 40
        hu[(x - 40 - shift) ** 2 + (y + 15) ** 2 <= 28 ** 2] = 120
        hu[(x + 70) ** 2 + (y - 30 + shift) ** 2 <= 18 ** 2] = 700
        hu[(x + 15) ** 2 + (y - 60) ** 2 <= 20 ** 2] = -100
        volume[z] = gaussian_filter(hu, 1.0)
    return volume, (x / 150) ** 2 + (y / 105) ** 2 <= 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(volume: np.ndarray, spacing: float, n_angles: int, device: torch.device):
    t0 = time.perf_counter()
    proj = get_projector(volume.shape[1], volume.shape[2], (spacing, spacing), n_angles, device)
    sync(device)
    build = time.perf_counter() - t0
    mu = hu_to_mu(torch.from_numpy(volume).to(device))
    proj.fbp(proj.project(mu[:2]), "ramp")  # warm-up: FFT plans, sparse handles
    sync(device)
    t0 = time.perf_counter()
    sino = proj.project(mu)
    recon = mu_to_hu(proj.fbp(sino, "ramp"))
    sync(device)
    return build, time.perf_counter() - t0, sino.cpu().numpy(), recon.cpu().numpy(), proj


def scikit_image(volume: np.ndarray, spacing: float, n_angles: int):
    theta = np.arange(n_angles) * 180.0 / n_angles
    sinos, recons = [], []
    t0 = time.perf_counter()
    for hu in volume:
        mu = hu_to_mu(torch.from_numpy(hu)).double().numpy()
        sino = radon(mu, theta=theta, circle=False) * spacing  # line integrals in mm
        recon = iradon(sino / spacing, theta=theta, output_size=hu.shape[0], filter_name="ramp", circle=False)
        sinos.append(sino)
        recons.append(mu_to_hu(torch.from_numpy(recon)).numpy())
    return time.perf_counter() - t0, np.stack(sinos), np.stack(recons)


def as_scikit_sinogram(sino: np.ndarray, proj, n_sk: int) -> np.ndarray:
    """Our sinogram in scikit-image's convention: its angle theta is our -theta = (pi - theta, -t)."""
    mapped = np.concatenate([sino[:, :1], sino[:, :0:-1, ::-1]], axis=1)
    index = proj.n_detectors // 2 + np.arange(n_sk) - n_sk // 2
    return mapped[:, :, index].transpose(0, 2, 1)


def errors(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> str:
    d = np.abs(a - b)[:, mask]
    return f"{d.max():.1f} / {d.mean():.2f} / {np.sqrt((d ** 2).mean()):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="512 x 512 x 150 volume")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--sk-slices", type=int, default=4, help="slices given to scikit-image with --full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size, depth = (512, 150) if args.full else (args.size, args.slices)
    spacing = 358.0 / size  # a 358 mm field of view, 0.7 mm pixels at 512
    n_angles = size
    device = torch.device(args.device)
    volume, mask = phantom(size, depth, spacing)

    build, t_ours, sino, recon, proj = ours(volume, spacing, n_angles, device)
    sk_depth = min(depth, args.sk_slices) if args.full else depth
    t_sk, sk_sino, sk_recon = scikit_image(volume[:sk_depth], spacing, n_angles)
    t_sk_all = t_sk * depth / sk_depth
    sk_label = f"{t_sk_all:.1f} s" + (f" (extrapolated from {sk_depth} slices)" if sk_depth < depth else "")
    mapped = as_scikit_sinogram(sino[:sk_depth], proj, sk_sino.shape[1])
    sino_diff = np.linalg.norm(mapped - sk_sino) / np.linalg.norm(sk_sino)

    ct = torch.from_numpy(volume).to(device)
    simulate_low_dose(ct[:2], (spacing, spacing), 0.25, seed=0)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    simulate_low_dose(ct, (spacing, spacing), 0.25, seed=0)
    sync(device)
    t_sim = time.perf_counter() - t0

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{size} x {size} x {depth} slices, {spacing:.2f} mm pixels, {n_angles} angles, device {device}, "
          f"torch threads {torch.get_num_threads()}, load average {load:.1f}\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| ours: projector build (once per geometry, cached) | {build:.1f} s |")
    print(f"| ours: project + FBP, all slices, warm | {t_ours:.2f} s |")
    print(f"| scikit-image radon + iradon, all slices | {sk_label} |")
    print(f"| speed-up (scikit-image time / ours) | {t_sk_all / t_ours:.0f}x |")
    print(f"| ours: simulate_low_dose(dose 0.25), all slices, warm | {t_sim:.2f} s |")
    print(f"| reconstruction difference ours vs scikit-image, body, HU (max / mean / rms) | "
          f"{errors(recon[:sk_depth], sk_recon, mask)} |")
    print(f"| round-trip error ours vs phantom, body, HU (max / mean / rms) | {errors(recon, volume, mask)} |")
    print(f"| round-trip error scikit-image vs phantom, body, HU (max / mean / rms) | "
          f"{errors(sk_recon, volume[:sk_depth], mask)} |")
    print(f"| sinogram difference ours vs scikit-image (relative L2) | {sino_diff:.4f} |")


if __name__ == "__main__":
    main()
