import cv2
import numpy as np
import pytest

from ferpipe.expression import CIRCUMPLEX, FER_TEMPLATE, align_faces, circumplex
from ferpipe.samples import PHOTO_LABELS
from ferpipe.types import EXPRESSIONS


def test_circumplex_mapping_is_the_documented_weighted_mean():
    probs = np.zeros((3, 7), np.float32)
    probs[0, EXPRESSIONS.index("happy")] = 1
    probs[1, EXPRESSIONS.index("neutral")] = 1
    probs[2, EXPRESSIONS.index("sad")] = 0.5
    probs[2, EXPRESSIONS.index("angry")] = 0.5
    v, a = circumplex(probs)
    assert (v[0], a[0]) == pytest.approx(CIRCUMPLEX["happy"])
    assert (v[1], a[1]) == (0, 0)
    assert v[2] == pytest.approx((-0.63 - 0.51) / 2) and a[2] == pytest.approx((-0.27 + 0.59) / 2)


def test_alignment_puts_landmarks_on_the_template():
    img = np.zeros((200, 300, 3), np.uint8)
    # a face tilted by 20 degrees, 120 px wide, somewhere in the frame
    ang = np.radians(20)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = (FER_TEMPLATE - 0.5) @ rot.T * 120 + [150, 100]
    for x, y in pts:
        cv2.circle(img, (round(x), round(y)), 3, (255, 255, 255), -1)
    crop = align_faces(img, pts[None], size=48, channels=1)[0, :, :, 0]
    for tx, ty in FER_TEMPLATE * 48:
        assert crop[round(ty), round(tx)] > 100
    with pytest.raises(ValueError, match="channels"):
        align_faces(img, pts[None], 48, channels=2)


def test_labelled_photos_give_one_face_each_and_a_valid_distribution(samples, detector, model):
    hits = 0
    for name, path in samples.items():
        if not name.endswith("-ph.jpg"):
            continue
        img = cv2.imread(str(path))
        dets = detector.detect(img)
        assert len(dets) == 1, name
        expr = model(model.crops(img, dets))
        assert np.allclose(expr.probs.sum(), 1, atol=1e-4)
        hits += EXPRESSIONS[int(expr.probs.argmax())] == PHOTO_LABELS[name.split("-")[2]]
        if PHOTO_LABELS[name.split("-")[2]] == "happy":
            assert EXPRESSIONS[int(expr.probs.argmax())] == "happy"
    assert hits >= 1


def _two_head_graph(path):
    """x -> Relu -> "cheap"; x -> MatMul x 3 -> "costly": a model whose second output needs work of its own."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "w")
    nodes = [helper.make_node("Relu", ["x"], ["cheap"]), helper.make_node("MatMul", ["x", "w"], ["m1"]),
             helper.make_node("MatMul", ["m1", "w"], ["m2"]), helper.make_node("MatMul", ["m2", "w"], ["costly"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("cheap", "costly")],
                              [w])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_session_for_one_output_runs_only_that_output_s_graph(tmp_path):
    """ONNX Runtime runs every node whatever outputs are asked for, so a head's session is built on the graph pruned
    to its output: the pipeline never pays for a second head (a blended FER2013 head runs a second network)."""
    import onnx

    from ferpipe.errors import ModelError
    from ferpipe.onnx import create_session, pruned_to

    path = _two_head_graph(tmp_path / "two.onnx")
    pruned = onnx.load_from_string(pruned_to(path.read_bytes(), ["cheap"]))
    assert [n.op_type for n in pruned.graph.node] == ["Relu"] and not pruned.graph.initializer
    x = np.array([[-1, 0.5, 2, -3]], np.float32)
    full, one = create_session(path), create_session(path, outputs=["cheap"])
    assert [o.name for o in one.get_outputs()] == ["cheap"]
    np.testing.assert_array_equal(one.run(None, {"x": x})[0], full.run(["cheap"], {"x": x})[0])
    costly = create_session(path, outputs=["costly"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(costly, x * 8)
    with pytest.raises(ModelError, match="no output 'nope'"):
        create_session(path, outputs=["nope"])


def test_the_default_model_s_pipeline_head_leaves_its_other_head_out():
    from ferpipe.expression import ExpressionModel
    from ferpipe.registry import default_expression_model, get_spec

    name = default_expression_model()
    heads = get_spec(name, task="expression").preprocess.heads
    assert heads and all(len(h) == 3 for h in heads), f"{name}: the shipped default has a head per protocol"
    outputs = {h[0]: h[2] for h in heads}
    for head, output in outputs.items():
        model = ExpressionModel.from_name(name, head=head if head != heads[0][0] else None)
        assert [o.name for o in model.session.get_outputs()] == [output]


def test_each_pipeline_model_gets_half_the_cores_unless_told(monkeypatch):
    from ferpipe.onnx import default_threads, model_threads

    monkeypatch.delenv("FERPIPE_THREADS", raising=False)
    assert model_threads() == max(1, default_threads() // 2) >= 1
    monkeypatch.setenv("FERPIPE_THREADS", "3")
    assert model_threads() == 3  # the user's choice wins
    monkeypatch.setenv("FERPIPE_THREADS", "0")
    with pytest.raises(ValueError, match="FERPIPE_THREADS must be >= 1, got 0"):
        model_threads()
