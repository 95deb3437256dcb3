"""Seeded synthetic H&E-like tiles and slides with exact ground truth (training targets in `targets`)."""
