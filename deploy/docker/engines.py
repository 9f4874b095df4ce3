"""`make engines`: a TensorRT plan (`<graph>.plan`, FP16) from every ONNX graph of the model
repository with trtexec, where an NVIDIA GPU and TensorRT exist; elsewhere it says what is
missing and exits 2.

The plans show that each graph converts to TensorRT as a whole and give trtexec's GPU latency
per graph (printed). The stages themselves run the ONNX graphs through ONNX Runtime's
TensorRT execution provider (LIPSYNCD_ORT_PROVIDERS), which builds its own engines on first
load into LIPSYNCD_TRT_CACHE_DIR when set.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

LATENCY = re.compile(r"Latency: min = [\d.]+ ms, max = [\d.]+ ms, mean = ([\d.]+) ms")


def missing_requirements() -> list[str]:
    missing = []
    if shutil.which("nvidia-smi") is None:
        missing.append("no nvidia-smi: no NVIDIA driver/GPU visible")
    else:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0 or "GPU" not in done.stdout:
            missing.append(f"nvidia-smi lists no GPU: {done.stderr.strip() or done.stdout.strip()}")
    if shutil.which("trtexec") is None:
        missing.append("no trtexec on PATH (TensorRT; e.g. /usr/src/tensorrt/bin in NVIDIA's images)")
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("model_repository"))
    parser.add_argument("--fp32", action="store_true", help="no FP16 kernels")
    args = parser.parse_args()
    graphs = sorted(args.models.glob("*/1/*.onnx"))
    if not graphs:
        print(f"make engines: no ONNX graphs under {args.models}/*/1 (run `make models`)", file=sys.stderr)
        return 2
    missing = missing_requirements()
    if missing:
        print("make engines: TensorRT plans cannot be built here:\n  " + "\n  ".join(missing)
              + "\nRun it on a machine with an NVIDIA GPU and TensorRT (the Triton image has both).",
              file=sys.stderr)
        return 2
    failed = []
    for graph in graphs:
        plan = graph.with_suffix(".plan")
        command = ["trtexec", f"--onnx={graph}", f"--saveEngine={plan}", *([] if args.fp32 else ["--fp16"])]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            failed.append(graph)
            print(f"{graph}: trtexec failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
            continue
        latency = LATENCY.search(done.stdout)
        print(f"{plan}: built, mean GPU latency {latency[1] + ' ms' if latency else 'not reported'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
