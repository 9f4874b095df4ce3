"""Build the face_detection stage's ONNX graphs from MediaPipe's bundled TFLite models.

Opens the mediapipe wheel as a zip (mediapipe is never installed), extracts the BlazeFace
detectors and the 468-point Face Mesh model, and converts each with tf2onnx. The full-range
detector ships with sparse weights (DENSIFY ops) that crash tf2onnx, so its weights are
densified first. Run it with the build-only venv (tensorflow + tf2onnx pin numpy<2).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("face_detection.build")

OPSET = 17


@dataclass(frozen=True)
class ModelSource:
    """One TFLite member of the wheel and the ONNX file it becomes."""

    member: str
    onnx_name: str
    required: bool
    sparse: bool = False


MODELS = (
    ModelSource(
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "face_detection_short_range.onnx",
        required=True,
    ),
    ModelSource(
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "face_detection_full_range.onnx",
        required=False,
        sparse=True,
    ),
    ModelSource(
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "face_landmark.onnx",
        required=True,
    ),
)


def extract_member(wheel_path: Path, member: str, dest_dir: Path) -> Path:
    """Copy one file out of the wheel into dest_dir and return its path."""
    target = dest_dir / Path(member).name
    with zipfile.ZipFile(wheel_path) as wheel:
        target.write_bytes(wheel.read(member))
    return target


def densify_tflite(tflite_path: Path) -> Path:
    """Rewrite a TFLite model whose weights are sparse into one with dense constant weights.

    TFLite computes every DENSIFY op's output once at preparation; those dense tensors are
    read back from the interpreter, stored as constant buffers, and the DENSIFY ops removed.
    """
    import flatbuffers  # build venv only, like tensorflow
    import numpy as np
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python import schema_util

    content = tflite_path.read_bytes()
    interpreter = tf.lite.Interpreter(model_content=content, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    model_input = interpreter.get_input_details()[0]
    interpreter.set_tensor(model_input["index"], np.zeros(model_input["shape"], model_input["dtype"]))
    interpreter.invoke()

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    subgraph = model.subgraphs[0]
    kept_operators = []
    for operator in subgraph.operators:
        code = schema_util.get_builtin_code_from_operator_code(model.operatorCodes[operator.opcodeIndex])
        if code != schema.BuiltinOperator.DENSIFY:
            kept_operators.append(operator)
            continue
        sparse_index, dense_index = operator.inputs[0], operator.outputs[0]
        dense = interpreter.get_tensor(dense_index)
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(dense.tobytes(), dtype=np.uint8)
        model.buffers.append(buffer)
        subgraph.tensors[dense_index].buffer = len(model.buffers) - 1
        # The now-unused sparse tensor gets the dense data too, so no reader trips on it.
        sparse_tensor = subgraph.tensors[sparse_index]
        sparse_tensor.sparsity = None
        sparse_tensor.buffer = len(model.buffers) - 1
        sparse_tensor.shape = list(dense.shape)
    subgraph.operators = kept_operators
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dense_path = tflite_path.with_name(tflite_path.stem + "_dense.tflite")
    dense_path.write_bytes(bytes(builder.Output()))
    return dense_path


def convert_tflite(tflite_path: Path, onnx_path: Path) -> None:
    """Convert one TFLite graph to ONNX with tf2onnx; raise if the converter fails."""
    command = [
        sys.executable, "-m", "tf2onnx.convert",
        "--tflite", str(tflite_path),
        "--output", str(onnx_path),
        "--opset", str(OPSET),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not onnx_path.is_file():
        raise RuntimeError(
            f"tf2onnx failed for {tflite_path.name} (rc={result.returncode}):\n{result.stderr[-4000:]}"
        )


def build(wheel_path: Path, out_dir: Path) -> list[Path]:
    """Extract and convert every model; optional models that fail are logged and skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    built: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="face_detection_build_") as scratch:
        scratch_dir = Path(scratch)
        for source in MODELS:
            onnx_path = out_dir / source.onnx_name
            partial_path = scratch_dir / source.onnx_name
            try:
                tflite_path = extract_member(wheel_path, source.member, scratch_dir)
                if source.sparse:
                    tflite_path = densify_tflite(tflite_path)
                convert_tflite(tflite_path, partial_path)
            except (RuntimeError, KeyError) as error:
                if source.required:
                    raise
                logger.warning("skipping optional model %s: %s", source.onnx_name, error)
                continue
            partial_path.replace(onnx_path)
            logger.info("wrote %s", onnx_path)
            built.append(onnx_path)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wheel", type=Path, required=True, help="mediapipe wheel (.whl)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the .onnx files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build(args.wheel, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
