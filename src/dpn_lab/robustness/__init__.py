"""Accuracy under input corruption: one model's evaluation, and a sweep's comparison against baselines."""
