"""Low-dose CT simulation: a parallel-beam projector with filtered back-projection and Poisson noise."""
