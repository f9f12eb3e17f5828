"""Attention, head pose, eye openness and facial blendshapes for every tracked face.

The models are MediaPipe's Face Landmarker bundle (registry name ``face-landmarker``): a 478-point
3-D face mesh and a 52-blendshape model, run on ferpipe's own tracked faces (not on whole frames:
the bundle's short-range detector misses small faces). Each face is cut out as MediaPipe does it,
a square 1.5 times the face box, turned so the eyes are level, at 256 x 256; the mesh is mapped
back to the frame; the blendshape model reads 146 of its points. Head pose is the rotation of
MediaPipe's canonical face onto the mesh (weighted Procrustes on the bundle's own landmark basis).

Sign conventions, in the picture as the camera sees it:
  yaw_deg   > 0: the face turns toward the right of the image (the person's own left); 0 = facing the camera
  pitch_deg > 0: the face tilts up (chin up)
  roll_deg  > 0: the head tilts counterclockwise in the image
Mirroring a video negates yaw and roll and keeps pitch.

``attentive``: the mesh was found, |yaw| and |pitch| are within the cone (30 and 20 degrees by
default) and the eyes are open (eye_openness >= 0.25, see EYES_OPEN). These are readings of what a face shows,
made by models; blendshapes are not FACS action units.
"""

from __future__ import annotations

import logging
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .types import Detections, FaceSignals, MeshCrops

log = logging.getLogger(__name__)

# MediaPipe face_blendshapes_graph.cc: the 146 mesh points the blendshape model reads, and its outputs
BLENDSHAPE_POINTS = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80,
    81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152, 153,
    154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246, 249, 251,
    263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318,
    321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386,
    387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)  # fmt: skip
BLENDSHAPES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip
BS_COLUMNS: tuple[str, ...] = tuple(f"bs_{n}" for n in BLENDSHAPES)

# Blendshapes that track one FACS action unit closely (the bundle's README): shown as "AU proxy", never "AU".
AU_PROXIES: dict[str, tuple[str, ...]] = {
    "AU1 proxy: inner brow raise": ("browInnerUp",),
    "AU2 proxy: outer brow raise": ("browOuterUpLeft", "browOuterUpRight"),
    "AU4 proxy: brow lowerer": ("browDownLeft", "browDownRight"),
    "AU6 proxy: cheek raise": ("cheekSquintLeft", "cheekSquintRight"),
    "AU9 proxy: nose wrinkle": ("noseSneerLeft", "noseSneerRight"),
    "AU12 proxy: lip corner pull (smile)": ("mouthSmileLeft", "mouthSmileRight"),
    "AU15 proxy: lip corner depress": ("mouthFrownLeft", "mouthFrownRight"),
    "AU26 proxy: jaw drop": ("jawOpen",),
    "AU45 proxy: blink": ("eyeBlinkLeft", "eyeBlinkRight"),
}

MESH_SIZE = 256
ROI_SCALE = 1.5  # face_landmarker_graph.cc: the face box grown 1.5 times
# Eyes count as open at eye_openness >= 0.25 (both eyeBlink blendshapes below about 0.75): eyeBlink also rises
# when people look down (measured here and with the mediapipe package on WolfgangLanger_Pexels.mp4: 0.5 would
# call a speaker reading his notes "eyes closed" in 38% of frames), while a real blink takes it near 1.
EYES_OPEN = 0.25


@dataclass(frozen=True)
class AttentionCone:
    """When a face counts as attentive: within these head angles, with the eyes open."""

    yaw_deg: float = 30.0
    pitch_deg: float = 20.0
    eyes_open: float = EYES_OPEN

    def __post_init__(self) -> None:
        if not (0 < self.yaw_deg <= 90 and 0 < self.pitch_deg <= 90):
            raise ValueError(f"attention cone angles must be in (0, 90] degrees, got {self.yaw_deg}, {self.pitch_deg}")
        if not 0 <= self.eyes_open <= 1:
            raise ValueError(f"eyes_open must be in [0, 1], got {self.eyes_open}")


def _proto_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field, wire type, value) of a protobuf message (varint, 64-bit, length-delimited and 32-bit fields)."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((field, wire, value))
    return out


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def canonical_face(metadata: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From the bundle's geometry metadata (GeometryPipelineMetadata): the canonical mesh's vertices (468, 3)
    and the Procrustes landmark basis (ids, weights)."""
    vertices, ids, weights = [], [], []
    for field, wire, value in _proto_fields(metadata):
        if field == 1 and wire == 2:  # canonical_mesh: vertex_buffer (x y z u v per vertex) is field 3
            for f, w, v in _proto_fields(value):
                if f == 3 and w == 5:
                    vertices.append(struct.unpack("<f", v)[0])
                elif f == 3 and w == 2:
                    vertices.extend(struct.unpack(f"<{len(v) // 4}f", v))
        elif field == 2 and wire == 2:  # procrustes_landmark_basis: landmark_id, weight
            entry = {f: v for f, _, v in _proto_fields(value)}
            ids.append(int(entry.get(1, 0)))
            weights.append(struct.unpack("<f", entry[2])[0] if 2 in entry else 0.0)
    mesh = np.asarray(vertices, np.float64).reshape(-1, 5)[:, :3]
    if mesh.shape[0] < 468 or not ids:
        raise ValueError("the geometry metadata has no canonical face mesh or landmark basis")
    return mesh, np.asarray(ids, np.int64), np.asarray(weights, np.float64)


def head_rotation(points: np.ndarray, canonical: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The rotation (3, 3) that best turns the canonical face onto a mesh given in image axes (x right, y down,
    z away from the camera), by weighted orthogonal Procrustes with scale on the basis points."""
    obs = points[ids] * np.array([1.0, -1.0, -1.0])  # to the canonical frame: y up, z toward the camera
    can = canonical[ids]
    w = weights / weights.sum()
    obs_c = obs - w @ obs
    can_c = can - w @ can
    u, _, vt = np.linalg.svd((can_c * w[:, None]).T @ obs_c)
    d = np.sign(np.linalg.det(u @ vt))
    return (u @ np.diag([1.0, 1.0, d]) @ vt).T


def euler_deg(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of R = Ry(yaw) Rx(-pitch) Rz(roll), with the signs in the module docstring."""
    from scipy.spatial.transform import Rotation

    yaw, pitch_x, roll = Rotation.from_matrix(rotation).as_euler("YXZ", degrees=True)
    return float(yaw), float(-pitch_x), float(roll)  # a positive turn about x brings the nose down


def roi_transform(box: np.ndarray, landmarks: np.ndarray, size: int = MESH_SIZE) -> np.ndarray:
    """The 2x3 affine from the frame to the mesh model's crop: a square of ROI_SCALE x the face box around its
    centre, turned so the eyes (landmarks 0 and 1) are level."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    angle = np.degrees(np.arctan2(ry - ly, rx - lx))
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(angle), size / max(side, 1.0))
    m[:, 2] += (size / 2 - cx, size / 2 - cy)
    return m


class FaceMesh:
    """The Face Landmarker's mesh and blendshape models on LiteRT, and the pose geometry, for tracked faces."""

    def __init__(self, bundle: str | os.PathLike, threads: int | None = None) -> None:
        from .onnx import create_interpreter

        with zipfile.ZipFile(bundle) as zf:
            names = set(zf.namelist())
            need = {
                "face_landmarks_detector.tflite",
                "face_blendshapes.tflite",
                "geometry_pipeline_metadata_landmarks.binarypb",
            }
            if not need <= names:
                raise ValueError(
                    f"{Path(bundle).name} is not a Face Landmarker bundle (missing {sorted(need - names)})"
                )
            self.mesh = create_interpreter(zf.read("face_landmarks_detector.tflite"), threads)
            self.shapes = create_interpreter(zf.read("face_blendshapes.tflite"), 1)
            self.canonical, self.basis_ids, self.basis_weights = canonical_face(
                zf.read("geometry_pipeline_metadata_landmarks.binarypb")
            )
        self._mesh_in = self.mesh.get_input_details()[0]["index"]
        outs = self.mesh.get_output_details()
        self._mesh_points = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 1434)
        self._mesh_score = next(
            o["index"] for o in outs if o["name"] != outs[0]["name"] and list(o["shape"]) == [1, 1, 1, 1]
        )
        self._shapes_in = self.shapes.get_input_details()[0]["index"]
        self._shapes_out = self.shapes.get_output_details()[0]["index"]

    @classmethod
    def from_registry(cls, name: str = "face-landmarker", threads: int | None = None) -> FaceMesh:
        from .registry import fetch, get_spec

        return cls(fetch(get_spec(name, task="landmarker"))["bundle"], threads)

    def cut(self, image: np.ndarray, detections: Detections) -> MeshCrops:
        """Each face's square for the mesh model (cheap; the frame can go once this is done)."""
        n = len(detections)
        crops = np.empty((n, MESH_SIZE, MESH_SIZE, 3), np.uint8)
        transforms = np.empty((n, 2, 3), np.float64)
        for k in range(n):
            transforms[k] = roi_transform(detections.boxes[k], detections.landmarks[k])
            crops[k] = cv2.warpAffine(image, transforms[k], (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT)  # fmt: skip
        return MeshCrops(crops, transforms)

    def landmarks(self, crop: np.ndarray, transform: np.ndarray) -> tuple[np.ndarray, float]:
        """(478, 3) mesh points in frame pixels (z in the same scale) and the face-presence probability, for one
        face's crop and the transform it was cut with."""
        x = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0
        self.mesh.set_tensor(self._mesh_in, x)
        self.mesh.invoke()
        pts = self.mesh.get_tensor(self._mesh_points).reshape(478, 3).astype(np.float64)
        score = float(1.0 / (1.0 + np.exp(-self.mesh.get_tensor(self._mesh_score).reshape(-1)[0])))
        inv = cv2.invertAffineTransform(transform)
        xy = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
        scale = np.sqrt(abs(np.linalg.det(inv[:, :2])))
        return np.column_stack([xy, pts[:, 2] * scale]), score

    def blendshapes(self, points: np.ndarray) -> np.ndarray:
        """(52,) blendshape scores in [0, 1] from the mesh points (frame pixels)."""
        self.shapes.set_tensor(self._shapes_in, points[list(BLENDSHAPE_POINTS), :2].astype(np.float32)[None])
        self.shapes.invoke()
        return np.clip(self.shapes.get_tensor(self._shapes_out).reshape(-1), 0.0, 1.0)

    def read(self, faces: MeshCrops, cone: AttentionCone | None = None) -> FaceSignals:
        """Signals for each cut-out face (NaN where the mesh is not found: presence below 0.5)."""
        cone = cone or AttentionCone()
        n = len(faces)
        pose = np.full((n, 3), np.nan, np.float32)
        shapes = np.full((n, len(BLENDSHAPES)), np.nan, np.float32)
        score = np.zeros(n, np.float32)
        for k in range(n):
            points, score[k] = self.landmarks(faces.crops[k], faces.transforms[k])
            if score[k] < 0.5 or not np.isfinite(points).all():
                continue
            pose[k] = euler_deg(head_rotation(points, self.canonical, self.basis_ids, self.basis_weights))
            shapes[k] = self.blendshapes(points)
        return FaceSignals.from_readings(pose, shapes, score, cone.yaw_deg, cone.pitch_deg, cone.eyes_open)

    def __call__(self, image: np.ndarray, detections: Detections, cone: AttentionCone | None = None) -> FaceSignals:
        """Signals for each detected face of a frame (``cut`` then ``read``)."""
        return self.read(self.cut(image, detections), cone)
