"""Entry point of the Triton container: writes the model repository with the instance-group
kind the chart asks for (KIND_CPU or KIND_GPU) into a writable directory, then execs
tritonserver with the remaining arguments.

One image serves CPU and GPU clusters, the image's repository stays read-only (the pod's root
filesystem is), and model_repository/*/config.pbtxt stay the CPU configs `make serve` uses.
Only config.pbtxt is written; each version directory is a symlink to the image's own, so the
ONNX files are not copied. `--dry-run` writes the repository and prints it instead of exec.

Before exec it removes what a killed Triton left in /dev/shm (`--shm-dir`): the Python
backend keeps each stub's tensors in files there, named by the command's
`--backend-config=python,shm-region-prefix-name=` (or the backend's default prefix), and a
crashed or OOM-killed server leaves them behind; the pod's /dev/shm is a memory volume that
outlives a container restart, so without this each restart would hold its predecessor's
regions until the pod is evicted for exceeding the volume's size limit. Only files with that
prefix that no running process has mapped go (a live server's must stay: it reopens them by
name when a stub's pool grows).

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
SHM_DIR = Path("/dev/shm")
STUB_REGION_PREFIX = "triton_python_backend_shm_region_"  # the Python backend's default
PREFIX_OPTION = "--backend-config=python,shm-region-prefix-name="  # + a prefix of one's own
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


def mapped_paths(proc: Path = Path("/proc")) -> set[str]:
    """Paths of the files mapped by the processes this one can see."""
    paths: set[str] = set()
    for maps in proc.glob("[0-9]*/maps"):
        try:
            lines = maps.read_text(errors="replace").splitlines()
        except OSError:  # the process exited meanwhile
            continue
        for line in lines:  # address perms offset device inode [path]
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith("/"):
                paths.add(fields[5].removesuffix(" (deleted)"))
    return paths


def clear_stale_regions(shm_dir: Path, prefix: str = STUB_REGION_PREFIX, proc: Path = Path("/proc")) -> list[str]:
    """Remove the Python backend's shared-memory files under `shm_dir` that no process maps
    (a killed server's); returns their names."""
    in_use = mapped_paths(proc)
    removed = []
    for region in sorted(shm_dir.glob(f"{prefix}*")):
        if str(region) not in in_use:
            region.unlink(missing_ok=True)
            removed.append(region.name)
    return removed


def remove_regions(prefix: str, shm_dir: Path = SHM_DIR) -> None:
    """Remove every stub file under a prefix: for a server known to be gone (a mapping its
    dying processes still hold stays valid, only the names go)."""
    for region in shm_dir.glob(f"{prefix}*"):
        region.unlink(missing_ok=True)


def stub_region_prefix(command: list[str]) -> str:
    """The Python backend's /dev/shm file prefix that a tritonserver command sets."""
    given = [arg.removeprefix(PREFIX_OPTION) for arg in command if arg.startswith(PREFIX_OPTION)]
    return given[-1] if given and given[-1] else STUB_REGION_PREFIX


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[args.index("--") + 1:] if "--" in args else []
    own = args[: args.index("--")] if "--" in args else args
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="the image's model repository")
    parser.add_argument("--target", type=Path, required=True, help="a writable directory")
    parser.add_argument("--kind", choices=KINDS, required=True, help="instance group kind")
    parser.add_argument("--dry-run", action="store_true", help="write the repository, do not exec")
    parser.add_argument("--shm-dir", type=Path, default=SHM_DIR,
                        help="where a killed server's Python-backend regions are cleared from")
    options = parser.parse_args(own)
    models = write_repository(options.source, options.target, options.kind)
    print(f"triton_entry: {', '.join(models)} as {options.kind} in {options.target}", flush=True)
    if options.dry_run:
        return
    stale = clear_stale_regions(options.shm_dir, stub_region_prefix(command))
    if stale:
        print(f"triton_entry: removed {len(stale)} shared-memory regions a killed server left in {options.shm_dir}",
              flush=True)
    if not command:
        raise SystemExit("triton_entry: no command after --")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
