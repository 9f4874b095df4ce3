"""`make eval`: measures what the mesh makes (lip sync, identity, stability, speed) on the
real media of ../shared/media and writes reports/eval.md with one contact sheet per case."""
