"""`reactkd simulate-ldct`: a low-dose CT simulated from a full-dose CT."""

from __future__ import annotations

import argparse

from reactkd.devices import resolve_device
from reactkd.errors import ReactKDError
from reactkd.images.readers import read_image
from reactkd.images.writers import write_image
from reactkd.ldct.simulator import simulate_low_dose_image
from reactkd.output_paths import check_output


def run_simulate_ldct(args: argparse.Namespace) -> None:
    if not 0 < args.dose <= 1:
        raise ReactKDError(f"--dose must be a fraction in (0, 1], got {args.dose}")
    check_output(args.out, folder=False, inputs=[args.ct])
    device = resolve_device(args.device)
    image = read_image(args.ct, name="--ct")
    # A real scan already carries full-dose noise: add only the noise the lower dose is missing.
    low_dose = simulate_low_dose_image(image, args.dose, seed=args.seed, input_is_full_dose=True,
                                       device=device)
    write_image(low_dose, args.out)
    print(f"wrote {args.out} (dose {args.dose:g})")
