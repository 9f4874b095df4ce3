"""The chart's `helm test` (and `make k8s-check`): one real lip-sync job through a running
release. Makes an API key for a test account (LIPSYNCD_ADMIN_EMAIL, with the release's
database settings, as `python -m gateway.admin ensure-admin`), uploads or names the media,
submits a lipsync-image job to the gateway and waits until it finishes.

With --image-url/--audio-url (or --image-file/--audio-file) the job must complete and its
output must be an MP4. Without them a synthetic picture and tone are uploaded: the picture has
no face, so the job must fail with error_code face_not_found, which the orchestrator can only
reach after the face_detection stage on Triton answered. Exit status 0 means it went through.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

TERMINAL = ("completed", "failed", "canceled")


def api_key() -> str:
    done = subprocess.run([sys.executable, "-m", "gateway.admin", "ensure-admin"], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ), check=False)
    if done.returncode != 0:
        raise SystemExit(f"smoke: could not make an API key:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def synthetic_png() -> bytes:
    image = Image.new("RGB", (320, 320), (90, 120, 160))
    ImageDraw.Draw(image).rectangle((100, 100, 220, 220), fill=(200, 180, 80))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def synthetic_wav(seconds: float = 2.0, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        samples = (int(8000 * math.sin(2 * math.pi * 220 * i / rate)) for i in range(int(seconds * rate)))
        wav.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return out.getvalue()


def upload(client: httpx.Client, name: str, data: bytes) -> str:
    answer = client.post("/api/v1/uploads", files={"file": (name, data)})
    if answer.status_code != 201:
        raise SystemExit(f"smoke: upload of {name} answered {answer.status_code}: {answer.text}")
    return str(answer.json()["url"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", required=True, help="base URL of the gateway")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--image-url")
    parser.add_argument("--audio-url")
    parser.add_argument("--image-file", type=Path)
    parser.add_argument("--audio-file", type=Path)
    args = parser.parse_args(argv)
    key = api_key()
    real = bool((args.image_url or args.image_file) and (args.audio_url or args.audio_file))
    with httpx.Client(base_url=args.gateway, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        if args.image_url:
            image = args.image_url
        elif args.image_file:
            image = upload(client, args.image_file.name, args.image_file.read_bytes())
        else:
            image = upload(client, "synthetic.png", synthetic_png())
        if args.audio_url:
            audio = args.audio_url
        elif args.audio_file:
            audio = upload(client, args.audio_file.name, args.audio_file.read_bytes())
        else:
            audio = upload(client, "synthetic.wav", synthetic_wav())
        answer = client.post("/api/v1/lipsync-image", json={"formState": {"image": image, "audio": audio}})
        if answer.status_code != 200:
            raise SystemExit(f"smoke: submit answered {answer.status_code}: {answer.text}")
        job_id = answer.json()["id"]
        print(f"smoke: job {job_id} submitted", flush=True)
        deadline = time.monotonic() + args.timeout
        job = answer.json()
        while job.get("status") not in TERMINAL:
            if time.monotonic() > deadline:
                raise SystemExit(f"smoke: job {job_id} not finished within {args.timeout:.0f} s: {job}")
            time.sleep(1.0)
            job = client.get(f"/api/v1/jobs/{job_id}").json()
        print(f"smoke: job {job_id} {job['status']} {job.get('error_code') or ''}", flush=True)
        if real:
            if job["status"] != "completed":
                raise SystemExit(f"smoke: job did not complete: {job}")
            # Fetched through the gateway Service: the public host may not resolve in the cluster.
            # With S3 storage the gateway answers 302 to a presigned GET of the bucket (httpx
            # drops the API key on that cross-origin hop).
            output = httpx.URL(str(job["output"]))
            video = client.get(output.raw_path.decode(), timeout=120, follow_redirects=True)
            if video.status_code != 200 or video.content[4:8] != b"ftyp":
                raise SystemExit(f"smoke: output {job['output']} is not an MP4 ({video.status_code})")
            via = f" via {video.history[0].status_code} to {video.url.host}" if video.history else ""
            print(f"smoke: output {len(video.content)} bytes of MP4{via}", flush=True)
        elif job["status"] != "failed" or job.get("error_code") != "face_not_found":
            raise SystemExit(f"smoke: expected failed/face_not_found for the faceless picture: {job}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
