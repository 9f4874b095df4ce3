"""`make images`: builds the service image (deploy/docker/Dockerfile) and the Triton image
(deploy/docker/Dockerfile.triton) with the first container engine that works here: docker,
podman or buildah. Exits 2 with a message saying so when none does (a docker client without
a daemon does not count). `--push` pushes both after building.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGES = (("", "deploy/docker/Dockerfile"), ("-triton", "deploy/docker/Dockerfile.triton"))
ENGINES = ("docker", "podman", "buildah")


def find_engine() -> tuple[str | None, list[str]]:
    """The first engine whose daemon/storage answers, and why each other one did not."""
    reasons = []
    for name in ENGINES:
        path = shutil.which(name)
        if path is None:
            reasons.append(f"{name}: not installed")
            continue
        check = [path, "info"] if name != "buildah" else [path, "info", "--debug=false"]
        try:
            done = subprocess.run(check, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{name}: {exc}")
            continue
        if done.returncode == 0:
            return path, reasons
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        reasons.append(f"{name}: installed, but `{name} info` failed: {last}")
    return None, reasons


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", default="lipsyncd", help="image name prefix, e.g. ghcr.io/acme/lipsyncd")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--push", action="store_true")
    args = parser.parse_args()
    engine, reasons = find_engine()
    if engine is None:
        print("make images: no working container engine here, so no image was built.\n  "
              + "\n  ".join(reasons)
              + "\nInstall docker (with its daemon running), podman or buildah, then run `make images` again.",
              file=sys.stderr)
        return 2
    build = [engine, "bud"] if engine.endswith("buildah") else [engine, "build"]
    for suffix, dockerfile in IMAGES:
        ref = f"{args.repo}{suffix}:{args.tag}"
        print(f"make images: building {ref} from {dockerfile} with {engine}", flush=True)
        subprocess.run([*build, "-f", dockerfile, "-t", ref, "."], cwd=ROOT, check=True)
        if args.push:
            subprocess.run([engine, "push", ref], cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
