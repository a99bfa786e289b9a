"""Slicer-side parts of the REACTKD module kept out of REACTKD.py: the logic (no Qt) and the in-Slicer self-test."""
