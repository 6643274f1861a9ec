"""ONNX Runtime sessions for user-supplied networks, with clear errors and an honest provider report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flamejax.files import CorruptFileError, find_file


@dataclasses.dataclass(frozen=True)
class OnnxModel:
    """A loaded ONNX network and the execution provider that actually runs it."""

    session: object
    """``onnxruntime.InferenceSession``."""
    path: Path
    provider: str
    """The provider ONNX Runtime selected first, e.g. ``CUDAExecutionProvider`` or ``CPUExecutionProvider``."""

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict) -> dict:
        outputs = self.session.run(None, feeds)
        return dict(zip(self.output_names, outputs))


def preferred_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    order = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in order if p in available] or available


def load_onnx(key: str, path: str | Path | None = None, *, required: bool = True,
              providers: list[str] | None = None, threads: int | None = None) -> OnnxModel | None:
    """Open the ONNX file of manifest entry ``key`` (see :func:`flamejax.files.find_file`).

    Returns ``None`` when the file is absent and ``required`` is false. A file that ONNX Runtime cannot parse
    raises :class:`~flamejax.files.CorruptFileError` naming the file.
    """
    import onnxruntime as ort

    found = find_file(key, path, required=required)
    if found is None:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(found), sess_options=options, providers=providers or preferred_providers())
    except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf classes
        raise CorruptFileError(f"{found}: not a valid ONNX model for {key} ({type(err).__name__}: {err})") from err
    return OnnxModel(session=session, path=found, provider=session.get_providers()[0])
