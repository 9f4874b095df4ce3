"""Entry point of the Triton container: writes the model repository with the instance-group
kind the chart asks for (KIND_CPU or KIND_GPU) into a writable directory, then execs
tritonserver with the remaining arguments.

One image serves CPU and GPU clusters, the image's repository stays read-only (the pod's root
filesystem is), and model_repository/*/config.pbtxt stay the CPU configs `make serve` uses.
Only config.pbtxt is written; each version directory is a symlink to the image's own, so the
ONNX files are not copied. `--dry-run` writes the repository and prints it instead of exec.

    python3 triton_entry.py --source /opt/lipsyncd/model_repository \\
        --target /var/run/lipsyncd/models --kind KIND_GPU -- tritonserver --model-repository=...
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

KINDS = ("KIND_CPU", "KIND_GPU")
KIND_LINE = re.compile(r"\bkind:\s*KIND_[A-Z]+")


def with_kind(config: str, kind: str) -> str:
    """config.pbtxt text with every instance group's kind set to `kind`."""
    if kind not in KINDS:
        raise ValueError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not KIND_LINE.search(config):
        raise ValueError("config.pbtxt has no instance_group kind to set")
    return KIND_LINE.sub(f"kind: {kind}", config)


def write_repository(source: Path, target: Path, kind: str) -> list[str]:
    """Mirror `source` into `target` with rewritten configs; returns the model names."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    models = []
    for config in sorted(source.glob("*/config.pbtxt")):
        model_dir = config.parent
        out = target / model_dir.name
        out.mkdir()
        (out / "config.pbtxt").write_text(with_kind(config.read_text(), kind))
        for version in model_dir.iterdir():
            if version.is_dir() and version.name.isdigit():
                (out / version.name).symlink_to(version.resolve(), target_is_directory=True)
        models.append(model_dir.name)
    if not models:
        raise SystemExit(f"triton_entry: no models (*/config.pbtxt) under {source}")
    return models


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[args.index("--") + 1:] if "--" in args else []
    own = args[: args.index("--")] if "--" in args else args
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="the image's model repository")
    parser.add_argument("--target", type=Path, required=True, help="a writable directory")
    parser.add_argument("--kind", choices=KINDS, required=True, help="instance group kind")
    parser.add_argument("--dry-run", action="store_true", help="write the repository, do not exec")
    options = parser.parse_args(own)
    models = write_repository(options.source, options.target, options.kind)
    print(f"triton_entry: {', '.join(models)} as {options.kind} in {options.target}", flush=True)
    if options.dry_run:
        return
    if not command:
        raise SystemExit("triton_entry: no command after --")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
