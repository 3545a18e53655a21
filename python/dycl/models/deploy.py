"""Models for deployment: a fingerprint of a network's weights, ONNX export, ONNX Runtime inference.

* :func:`model_fingerprint` — a short hash of the weights and the input size:
  what an index of embeddings depends on. An ONNX file exported here carries
  the fingerprint of the network it came from, so an index built with the
  checkpoint is queried with the ONNX file (and refused with any other model).
* :func:`export_onnx` — ``torch.onnx.export`` (the ``torch.export`` based
  exporter) with a dynamic batch axis, opset :data:`ONNX_OPSET`, weights inside
  the one file, and the model's metadata (``dycl.*`` properties).
* :class:`OnnxEmbeddingNet` — an ONNX Runtime session behind the ``nn.Module``
  interface, so that :func:`dycl.embed.extract_embeddings` runs it like the
  torch network. It checks the graph is an embedding model: one image input
  ``(batch, 3, H, W)`` and a ``(batch, d)`` output (also on a probe batch).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: The opset of exported models (supported by ONNX Runtime >= 1.14).
ONNX_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


def model_fingerprint(model: nn.Module, image_size: int) -> str:
    """16 hex digits of SHA-256 over the state dict (names, dtypes, shapes, values) and the input size."""
    digest = hashlib.sha256(f"dycl-model image_size={int(image_size)}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    image_size: int,
    metadata: dict[str, Any] | None = None,
    opset: int = ONNX_OPSET,
) -> Path:
    """Export ``model`` (images ``(batch, 3, S, S)`` -> embeddings ``(batch, d)``) to one ONNX file.

    The batch axis is dynamic; ``metadata`` is stored as ``dycl.<key>``
    properties (JSON values) together with the fingerprint and image size.
    Written to a temporary name and renamed (an existing file is replaced only
    when the export succeeded).
    """
    import onnx

    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    was_training = model.training
    model.eval()
    example = torch.zeros(2, 3, int(image_size), int(image_size))
    try:
        batch = torch.export.Dim("batch", min=1)
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its steps
            torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_shapes={"x": {0: batch}},
                              opset_version=opset, dynamo=True, external_data=False, verbose=False)
        proto = onnx.load(str(tmp))
        props = {
            "dycl.fingerprint": model_fingerprint(model, image_size),
            "dycl.image_size": int(image_size),
            "dycl.opset": opset,
            **{f"dycl.{k}": v for k, v in (metadata or {}).items()},
        }
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.save(proto, str(tmp))
        os.replace(tmp, target)
    finally:
        model.train(was_training)
        for leftover in (tmp, tmp.with_name(tmp.name + ".data")):
            if leftover.exists():
                leftover.unlink()
    return target


def _dim(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class OnnxEmbeddingNet(nn.Module):
    """An ONNX embedding model run by ONNX Runtime (CPU), callable like the torch network.

    Attributes: ``path``, ``metadata`` (the ``dycl.*`` properties, JSON-decoded),
    ``image_size`` (from the metadata, else the input's static size, else
    ``image_size`` given), ``embedding_dim``, ``fingerprint`` (the exporter's,
    else ``"onnx-"`` + the file's hash).

    Raises:
        ValueError: unreadable file, or not an embedding model (input/output shapes).
    """

    def __init__(self, path: str | os.PathLike, image_size: int | None = None, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"model: no such file: {self.path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types (InvalidGraph, Fail, ...)
            raise ValueError(
                f"model: cannot load {self.path} as an ONNX model ({str(exc).strip().splitlines()[0][:200]})"
            ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k[len("dycl.") :]: _json(v) for k, v in meta.items() if k.startswith("dycl.")}
        self.input_name, self.image_size = self._check_input(image_size)
        self.embedding_dim = self._check_output()
        self.fingerprint = str(self.metadata.get("fingerprint") or f"onnx-{_file_hash(self.path)}")

    def _check_input(self, image_size: int | None) -> tuple[str, int]:
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or _dim(inputs[0].shape[1]) not in (None, 3):
            shapes = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise ValueError(
                f"model: {self.path} is not an embedding model: expected one image input "
                f"(batch, 3, H, W), got {shapes}"
            )
        h, w = _dim(inputs[0].shape[2]), _dim(inputs[0].shape[3])
        size = self.metadata.get("image_size") or (h if h is not None and h == w else None) or image_size
        if size is None:
            raise ValueError(f"model: {self.path} has a dynamic input size; pass --image-size")
        if image_size is not None and int(image_size) != int(size):
            raise ValueError(f"image_size: {self.path} takes {size} px images, not {image_size}")
        return inputs[0].name, int(size)

    def _check_output(self) -> int:
        outputs = self.session.get_outputs()
        probe = np.zeros((2, 3, self.image_size, self.image_size), dtype=np.float32)
        try:
            result = self.session.run(None, {self.input_name: probe})
        except Exception as exc:
            raise ValueError(
                f"model: {self.path} fails on a (2, 3, {self.image_size}, {self.image_size}) "
                f"batch ({str(exc).strip().splitlines()[0][:200]})"
            ) from None
        if len(outputs) != 1 or result[0].ndim != 2 or result[0].shape[0] != 2:
            shapes = ", ".join(str(np.asarray(r).shape) for r in result)
            raise ValueError(
                f"model: {self.path} is not an embedding model: a batch of 2 images gave "
                f"output(s) of shape {shapes}, expected one (2, d)"
            )
        return int(result[0].shape[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


__all__ = ["INPUT_NAME", "ONNX_OPSET", "OUTPUT_NAME", "OnnxEmbeddingNet", "export_onnx", "model_fingerprint"]
