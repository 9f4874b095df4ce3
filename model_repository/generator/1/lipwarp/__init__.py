"""Landmark-driven portrait animation for the `generator` stage: target shapes, warp field, mouth interior."""
