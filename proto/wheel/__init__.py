"""Packaging of the `lipsyncd-stages` wheel (build.py)."""
