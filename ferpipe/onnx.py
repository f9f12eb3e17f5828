"""ONNX Runtime sessions and the base class every model family builds on."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import ModelError

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Intra-op threads: $FERPIPE_THREADS, else the number of usable cores."""
    raw = os.environ.get("FERPIPE_THREADS")
    if raw:
        value = int(raw)
        if value < 1:
            raise ValueError(f"FERPIPE_THREADS must be >= 1, got {value}")
        return value
    return max(1, len(os.sched_getaffinity(0)))


def model_threads() -> int:
    """Intra-op threads for each model of the pipeline, which runs detection, classification and the face mesh on
    threads of their own at the same time: $FERPIPE_THREADS, else half the usable cores (at least one). On two cores,
    three models each on one thread beat the same models each on two by about 5% (measured on the 20 s sample)."""
    if os.environ.get("FERPIPE_THREADS"):
        return default_threads()
    return max(1, default_threads() // 2)


def pruned_to(model_bytes: bytes, outputs: list[str]) -> bytes:
    """The model with only ``outputs`` and the nodes they need.

    ONNX Runtime runs every node of a graph whatever outputs a call asks for, so a file with a second head (say, a
    FER2013 head blended with another network) would cost the pipeline that head's work on every face. Nodes of an
    ONNX graph are in topological order, so one backward walk finds what the outputs need."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    g = model.graph
    missing = set(outputs) - {o.name for o in g.output}
    if missing:
        raise ModelError(f"the model has no output {sorted(missing)[0]!r}")
    need, keep = set(outputs), []
    for node in reversed(g.node):
        if any(o in need for o in node.output):
            keep.append(node)
            need.update(i for i in node.input if i)
    kept = {
        "node": list(reversed(keep)),
        "output": [o for o in g.output if o.name in outputs],
        "initializer": [t for t in g.initializer if t.name in need],
        "value_info": [v for v in g.value_info if v.name in need],
    }
    for field, items in kept.items():
        del getattr(g, field)[:]
        getattr(g, field).extend(items)
    return model.SerializeToString()


DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "openvino")
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "openvino": "OpenVINOExecutionProvider"}
_EXTRAS = {"cuda": "onnxruntime-gpu (pip install 'ferpipe[cuda]') and an NVIDIA GPU with CUDA",
           "openvino": "onnxruntime-openvino (pip install 'ferpipe[openvino]')"}  # fmt: skip
_device = "auto"
providers_used: dict[str, str] = {}  # model file -> the provider its session runs on (recorded with each run)


def providers_for(device: str) -> list[str]:
    """ONNX Runtime execution providers for a device, best first, CPU last as ONNX Runtime's fallback for any
    operator the device lacks; ValueError naming what is missing for a device this machine cannot use."""
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    available = ort.get_available_providers()
    if device == "auto":
        best = [_PROVIDERS[d] for d in ("cuda", "openvino") if _PROVIDERS[d] in available]
        return [*best[:1], "CPUExecutionProvider"]
    if _PROVIDERS[device] not in available:
        raise ValueError(f"--device {device} needs {_EXTRAS[device]}; this onnxruntime has "
                         f"{', '.join(p.removesuffix('ExecutionProvider') for p in available)}")  # fmt: skip
    return list(dict.fromkeys([_PROVIDERS[device], "CPUExecutionProvider"]))


def usable_devices() -> list[str]:
    """The devices this machine's onnxruntime can use (auto and cpu always)."""
    available = ort.get_available_providers()
    return ["auto", "cpu", *(d for d in ("cuda", "openvino") if _PROVIDERS[d] in available)]


@contextlib.contextmanager
def use_device(device: str):
    """Sessions created inside the block run on ``device`` (the pipeline's setting; checked here)."""
    global _device
    providers_for(device)
    before, _device = _device, device
    try:
        yield
    finally:
        _device = before


def pruned_cached(path: Path, outputs: list[str]) -> bytes:
    """pruned_to, cached by the model file's hash and the outputs (importing onnx and pruning cost about 0.5 s of
    every start-up)."""
    import hashlib

    from .config import cache_dir

    data = path.read_bytes()
    key = hashlib.sha256(data + "\0".join(outputs).encode()).hexdigest()[:24]
    cached = cache_dir() / "pruned" / f"{path.stem}-{key}.onnx"
    if cached.is_file():
        return cached.read_bytes()
    pruned = pruned_to(data, outputs)
    with contextlib.suppress(OSError):  # a read-only cache only costs the next start-up the pruning again
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.part")
        tmp.write_bytes(pruned)
        os.replace(tmp, cached)
    return pruned


def create_session(
    path: str | os.PathLike, threads: int | None = None, outputs: list[str] | None = None, arena: bool = False
) -> ort.InferenceSession:
    """The one place ferpipe creates an ONNX Runtime session; with ``outputs``, of the graph pruned to them.

    ``arena``: keep working memory between runs (ONNX Runtime's arena; see OnnxModel's ``arena_bytes``). Without it,
    buffers over 1 MiB are mapped and returned on every run (ferpipe.pipeline sets glibc's mmap threshold so, for
    video frames), which cost MTCNN's P-net about a quarter of its time in page faults.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = arena
    # no busy-waiting between ops: on small machines it starves the decode thread
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = providers_for(_device)
    log.debug("ONNX session %s on %s", path.name, providers[0])
    try:
        if outputs:
            session = ort.InferenceSession(pruned_cached(path, outputs), sess_options=opts, providers=providers)
        else:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        providers_used[path.name] = session.get_providers()[0]
        return session
    except ModelError as exc:
        raise ModelError(f"{path.name}: {exc}") from None
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path.name}: not a usable ONNX model ({first[:200]})") from None


def create_interpreter(model: str | os.PathLike | bytes, threads: int | None = None):
    """The one place ferpipe creates a LiteRT (TensorFlow Lite) interpreter, for models shipped as .tflite that
    LiteRT's XNNPACK kernels run several times faster than the same graph converted for ONNX Runtime
    (MediaPipe's face mesh: see README, "Attention and facial actions")."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - a declared dependency
        raise ModelError("the face mesh needs the 'ai-edge-litert' package (pip install ai-edge-litert)") from None
    kwargs = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    try:
        with _quiet_stderr():  # LiteRT's C++ runtime prints an INFO line about its CPU delegate
            interp = Interpreter(num_threads=threads or default_threads(), **kwargs)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"not a usable TFLite model ({str(exc).splitlines()[0][:200]})") from None
    return interp


@contextlib.contextmanager
def _quiet_stderr():
    """Native code's writes to file descriptor 2 go nowhere while the block runs (Python's own stderr too)."""
    import sys

    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured): nothing to silence
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


class OnnxModel:
    """preprocess -> run -> postprocess around one ONNX Runtime session.

    Subclasses override preprocess and postprocess; __call__ chains the three.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, outputs: list[str] | None = None,
                 arena_bytes: int = 0) -> None:  # fmt: skip
        """``arena_bytes`` > 0: the session keeps its working memory between runs while inputs stay within that many
        bytes; a run on a larger input gives back what it needed afterwards (arena shrinkage), so a burst of faces
        or a 4K frame does not raise the memory held for the rest of a run."""
        if arena_bytes < 0:
            raise ValueError(f"arena_bytes must be >= 0, got {arena_bytes}")
        self.path = Path(path)
        self.session = create_session(self.path, threads, outputs, arena=arena_bytes > 0)
        self.arena_bytes = arena_bytes
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = self.session.get_inputs()[0].shape
        self.output_names: list[str] | None = outputs  # None: every output

    def preprocess(self, inputs):
        return np.asarray(inputs, dtype=np.float32)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(tensor, dtype=np.float32)
        big = self.arena_bytes and x.nbytes > self.arena_bytes
        return self.session.run(self.output_names, {self.input_name: x}, self._shrink if big else None)

    def postprocess(self, outputs: list[np.ndarray], inputs):
        return outputs

    def __call__(self, inputs):
        return self.postprocess(self.run(self.preprocess(inputs)), inputs)
