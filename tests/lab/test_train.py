"""Training end to end on a tiny subset: one epoch, ONNX export, registry, then `ferpipe eval` and `process`."""

import json

import numpy as np
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch", reason="training needs the [train] extra (torch==2.13.0)")


def test_train_export_register_eval_and_process(fer_parquet, tmp_path, samples):
    cache = tmp_path / "cache"
    env = {"FERPIPE_CACHE": str(cache)}
    r = run_cli("train", "--data", str(fer_parquet), "--out", str(tmp_path / "run"), "--name", "tiny-cnn",
                "--epochs", "1", "--limit", "300", "--width", "8", "--batch-size", "64", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "registered as 'tiny-cnn'" in r.stdout
    spec = json.loads((cache / "registry" / "tiny-cnn.json").read_text())
    assert spec["preprocess"]["output"] == "logits" and spec["preprocess"]["temperature"] > 0
    r = run_cli("eval", "--data", str(fer_parquet), "--split", "public_test", "--model", "tiny-cnn", "--limit", "200",
                "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["n"] == 200 and 0 <= rep["accuracy"] <= 1 and len(rep["confusion"]) == 7
    r = run_cli("process", str(samples["single_face.mp4"]), "--db", str(tmp_path / "db.duckdb"), "--model", "tiny-cnn",
                "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["faces"] == 1


def test_training_resumes_from_its_checkpoint(fer_parquet, tmp_path):
    from ferpipe.lab.train import TrainConfig, train_cnn

    cfg = TrainConfig(width=8, epochs=2, limit=200, batch_size=64, patience=5)
    first = train_cnn(fer_parquet, tmp_path, TrainConfig(**{**cfg.__dict__, "epochs": 2}))
    assert first["state"]["epoch"] == 2 and len(first["state"]["history"]) == 2
    again = train_cnn(fer_parquet, tmp_path, cfg)  # nothing left to do: loads, does not retrain
    assert again["state"]["history"] == first["state"]["history"]
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)  # as written before the SWA options existed
    for key in ("init", "swa_start", "swa_lr"):
        del saved["config"][key]
    torch.save(saved, tmp_path / "checkpoint.pt")
    assert train_cnn(fer_parquet, tmp_path, cfg)["state"]["history"] == first["state"]["history"]
    with pytest.raises(ValueError, match="another config"):
        train_cnn(fer_parquet, tmp_path, TrainConfig(width=16, epochs=2, limit=200, batch_size=64))


def test_augment_keeps_shape_and_range():
    from ferpipe.lab.train import augment, class_weights

    x = torch.rand(16, 1, 48, 48)
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    w = class_weights(np.array([0, 0, 0, 1]), 1.0)
    assert w[1] > w[0]


def test_svm_hog_baseline_on_a_tiny_subset(fer_parquet, tmp_path):
    r = run_cli("train", "--arch", "svm-hog", "--data", str(fer_parquet), "--out", str(tmp_path), "--limit", "300")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "svm-hog.json").read_text())
    assert 0 <= res["accuracy"] <= 1 and res["C"] in (0.01, 0.1, 1.0)


def test_hog_features_shape():
    from ferpipe.lab.baselines import hog_features

    f = hog_features(np.zeros((2, 48, 48), np.uint8))
    assert f.shape == (2, 900)


def test_hog_responds_to_edge_orientation():
    from ferpipe.lab.baselines import hog_features

    vertical = np.zeros((1, 48, 48), np.uint8)
    vertical[:, :, 24:] = 255
    horizontal = np.transpose(vertical, (0, 2, 1)).copy()
    fv, fh = hog_features(vertical)[0].reshape(25, 4, 9), hog_features(horizontal)[0].reshape(25, 4, 9)
    assert fv.sum(axis=(0, 1)).argmax() == 0  # gradient along x: 0 degrees
    assert fh.sum(axis=(0, 1)).argmax() == 4  # gradient along y: 90 degrees (bin 4 of 9)


@pytest.fixture(scope="module")
def two_tiny_cnns(tmp_path_factory, fer_parquet):
    """Two width-8 CNNs trained for one epoch on 300 images, with different seeds."""
    from ferpipe.lab.train import TrainConfig, train_cnn

    paths = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"tiny{seed}")
        train_cnn(fer_parquet, out, TrainConfig(width=8, epochs=1, limit=300, batch_size=64, seed=seed))
        paths.append(out / "best.pt")
    return paths


def test_export_model_averages_members_with_flip_and_int8(two_tiny_cnns, fer_parquet, tmp_path):
    import onnx

    from ferpipe.onnx import create_session

    cache = tmp_path / "cache"
    r = run_cli("export-model", "--checkpoint", str(two_tiny_cnns[0]), "--flip-checkpoint", str(two_tiny_cnns[1]),
                "--data", str(fer_parquet), "--out", str(tmp_path / "fp32"), "--name", "tiny-ens", "--width", "8",
                "--limit", "300", env={"FERPIPE_CACHE": str(cache)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "registered as 'tiny-ens'" in r.stdout
    spec = json.loads((cache / "registry" / "tiny-ens.json").read_text())
    metrics = spec["extra"]["metrics"]
    assert metrics["flip_tta"] == [False, True] and metrics["passes_per_face"] == 3
    assert spec["preprocess"]["temperature"] > 0

    # the graph's output is log of the mean softmax over member 1 (crop) and member 2 (crop, mirror)
    from ferpipe.lab.train import load_cnn

    x = torch.rand(5, 1, 48, 48) * 2 - 1
    a, b = (load_cnn(p, 8) for p in two_tiny_cnns)
    with torch.no_grad():
        want = torch.stack([torch.softmax(n(v), 1) for n, v in ((a, x), (b, x), (b, torch.flip(x, dims=[3])))]).mean(0)
    got = create_session(tmp_path / "fp32" / "tiny-ens.onnx").run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(np.exp(got), want.numpy(), atol=1e-5)

    r = run_cli("export-model", "--checkpoint", str(two_tiny_cnns[0]), "--data", str(fer_parquet), "--out",
                str(tmp_path / "int8"), "--name", "tiny-int8", "--width", "8", "--int8", "--limit", "300",
                env={"FERPIPE_CACHE": str(cache)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    q = onnx.load(str(tmp_path / "int8" / "tiny-int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    r = run_cli("eval", "--data", str(fer_parquet), "--split", "public_test", "--model", "tiny-int8", "--limit", "300",
                "--json", env={"FERPIPE_CACHE": str(cache)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    int8_acc = json.loads(r.stdout)["accuracy"]
    assert abs(int8_acc - spec_accuracy(cache, "tiny-int8")) < 1e-6  # the spec's metrics come from the shipped file


def spec_accuracy(cache, name):
    return json.loads((cache / "registry" / f"{name}.json").read_text())["extra"]["metrics"]["accuracy"]


def test_int8_quantisation_keeps_predictions(two_tiny_cnns, tmp_path):
    from ferpipe.lab.convert import quantize_int8
    from ferpipe.lab.train import export_onnx, load_cnn
    from ferpipe.onnx import create_session

    fp32 = export_onnx(load_cnn(two_tiny_cnns[0], 8), tmp_path / "m.onnx", flip_tta=False)
    x = (np.random.default_rng(0).random((64, 1, 48, 48), np.float32) - 0.5) * 2
    q = quantize_int8(fp32, tmp_path / "q.onnx", x)
    a = create_session(fp32).run(None, {"input": x})[0]
    b = create_session(q).run(None, {"input": x})[0]
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9
    assert q.stat().st_size < fp32.stat().st_size


def test_export_arguments_are_checked(two_tiny_cnns, tmp_path):
    from ferpipe.lab.convert import quantize_int8
    from ferpipe.lab.train import TrainConfig, export_onnx, load_cnn

    with pytest.raises(ValueError, match="2 flags for 1 members"):
        export_onnx([load_cnn(two_tiny_cnns[0], 8)], tmp_path / "m.onnx", flip_tta=[True, False])
    with pytest.raises(ValueError, match="does not fit a width-16"):
        load_cnn(two_tiny_cnns[0], 16)
    with pytest.raises(ValueError, match="checkpoint not found"):
        load_cnn(tmp_path / "missing.pt", 8)
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", np.zeros((0, 1, 48, 48)))
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=0.7)
    with pytest.raises(ValueError, match="class_weight_power"):
        TrainConfig(class_weight_power=-1)
    with pytest.raises(ValueError, match="swa_start"):
        TrainConfig(epochs=3, swa_start=4)
    with pytest.raises(ValueError, match="swa_lr"):
        TrainConfig(swa_lr=0)
    with pytest.raises(ValueError, match=r"missing\.pt"):
        TrainConfig(init=str(tmp_path / "missing.pt"))


def test_swa_fine_tuning_starts_from_init_and_averages(two_tiny_cnns, fer_parquet, tmp_path):
    """--init loads the weights; at a negligible SWA rate the averaged network is the initial one."""
    from ferpipe.lab.train import TrainConfig, train_cnn

    init = torch.load(two_tiny_cnns[0])
    cfg = TrainConfig(width=8, epochs=2, limit=300, batch_size=64, init=str(two_tiny_cnns[0]), swa_start=1, swa_lr=1e-9)
    res = train_cnn(fer_parquet, tmp_path, cfg)
    hist = res["state"]["history"]
    assert [h["swa"] for h in hist] == [True, True] and hist[-1]["lr"] == pytest.approx(1e-9)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert int(ckpt["swa"]["n_averaged"]) == 2
    best = torch.load(tmp_path / "best.pt")
    convs = [k for k in init if k.endswith("weight") and init[k].dim() == 4]
    assert convs and all(torch.allclose(best[k], init[k], atol=1e-5) for k in convs)
    with pytest.raises(ValueError, match="does not fit a width-16 CNN"):
        train_cnn(
            fer_parquet, tmp_path / "wider", TrainConfig(width=16, epochs=1, limit=100, init=str(two_tiny_cnns[0]))
        )


def test_swa_follows_a_one_cycle_phase(fer_parquet, tmp_path):
    """Epochs before swa_start follow the one-cycle schedule; from it on, the rate settles at swa_lr."""
    from ferpipe.lab.train import TrainConfig, train_cnn

    cfg = TrainConfig(width=8, epochs=3, limit=200, batch_size=64, swa_start=2, swa_lr=0.003)
    res = train_cnn(fer_parquet, tmp_path, cfg)
    hist = res["state"]["history"]
    assert [h["swa"] for h in hist] == [False, True, True]
    assert hist[0]["lr"] < 0.003 and hist[2]["lr"] == pytest.approx(0.003)
    assert int(torch.load(tmp_path / "checkpoint.pt", weights_only=False)["swa"]["n_averaged"]) == 2


def test_soft_label_training_on_ferplus_and_fer2013_into_the_registry(fer_parquet, ferplus_parquet, tmp_path, samples):
    """FER+ votes and FER2013 labels train one network with one head per protocol, end to end: the spec
    lists both heads, `eval` scores each dataset with its own head, and `process` uses the FER+ head."""
    env = {"FERPIPE_CACHE": str(tmp_path / "cache")}
    r = run_cli("train", "--data", str(ferplus_parquet), "--data", str(fer_parquet), "--out", str(tmp_path / "run"),
                "--name", "tiny-joint", "--epochs", "1", "--limit", "300", "--width", "8", "--batch-size", "64",
                "--augment", "domain", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "ferplus" in r.stderr and "fer2013" in r.stderr  # per-head selection accuracy in the epoch line
    spec = json.loads((tmp_path / "cache" / "registry" / "tiny-joint.json").read_text())
    heads = spec["preprocess"]["heads"]
    assert [h for h, _ in heads] == ["ferplus", "fer2013"] and all(t > 0 for _, t in heads)
    assert spec["preprocess"]["temperature"] == heads[0][1]
    assert set(spec["extra"]["metrics"]["heads"]) == {"ferplus", "fer2013"}
    reports = {}
    for data in (ferplus_parquet, fer_parquet):
        r = run_cli("eval", "--data", str(data), "--split", "public_test", "--model", "tiny-joint", "--limit", "200",
                    "--json", env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        reports[json.loads(r.stdout)["protocol"]] = json.loads(r.stdout)
    assert reports["ferplus"]["head"] == "ferplus" and reports["fer2013"]["head"] == "fer2013"
    assert reports["ferplus"]["n"] < 200  # contempt and no-majority images are left out
    r = run_cli("eval", "--data", str(fer_parquet), "--split", "public_test", "--model", "tiny-joint", "--limit", "50",
                "--head", "nope", env=env)  # fmt: skip
    assert r.returncode == 1 and "unknown head 'nope'" in r.stderr
    r = run_cli("process", str(samples["single_face.jpg"]), "--db", str(tmp_path / "db.duckdb"), "--model",
                "tiny-joint", "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["faces"] == 1


def test_two_heads_learn_their_own_targets(tmp_path, fer_parquet):
    """The loss of an image reaches only its own protocol's head: with FER2013 data alone, a grown second
    head never moves."""
    from ferpipe.lab.train import TrainConfig, build_cnn, load_cnn, train_cnn

    net = build_cnn(8, heads=1)
    torch.save(net.state_dict(), tmp_path / "one.pt")
    grown = load_cnn(tmp_path / "one.pt", 8, heads=2)
    w = grown[-1].weight.detach()
    assert w.shape[0] == 14 and torch.equal(w[:7], w[7:])
    torch.save(grown.state_dict(), tmp_path / "two.pt")
    with pytest.raises(ValueError, match="has 2 heads"):
        load_cnn(tmp_path / "two.pt", 8, heads=3)
    res = train_cnn(fer_parquet, tmp_path / "run", TrainConfig(width=8, epochs=1, limit=200, batch_size=64))
    assert res["heads"] == ("fer2013",)
    assert json.loads((tmp_path / "run" / "heads.json").read_text()) == ["fer2013"]


def test_blended_head_is_its_own_output_and_the_mean_of_both_models(fer_parquet, ferplus_parquet, tmp_path):
    """export-model --blend fer2013=ferpipe-cnn: each head becomes an ONNX output; the FER2013 head is the mean of
    this network's and ferpipe-cnn's calibrated probabilities; the first head is untouched."""
    import onnxruntime as ort

    from ferpipe.expression import ExpressionModel
    from ferpipe.registry import get_spec

    env = {"FERPIPE_CACHE": str(tmp_path / "cache")}
    r = run_cli("train", "--data", str(ferplus_parquet), "--data", str(fer_parquet), "--out", str(tmp_path / "run"),
                "--epochs", "1", "--limit", "200", "--width", "8", "--batch-size", "64", "--no-register", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    common = ["export-model", "--flip-checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(ferplus_parquet),
              "--data", str(fer_parquet), "--width", "8", "--limit", "200", "--no-register"]  # fmt: skip
    assert run_cli(*common, "--out", str(tmp_path / "a"), "--name", "plain", env=env).returncode == 0
    r = run_cli(*common, "--out", str(tmp_path / "b"), "--name", "blended", "--blend", "fer2013=ferpipe-cnn", env=env)
    assert r.returncode == 0, r.stderr
    spec = json.loads((tmp_path / "b" / "blended.json").read_text())
    assert [h[0] for h in spec["preprocess"]["heads"]] == ["ferplus", "fer2013"]
    assert [h[2] for h in spec["preprocess"]["heads"]] == ["logits", "logits_fer2013"]
    info = spec["extra"]["metrics"]["blend"]["fer2013"]
    x = np.random.default_rng(0).uniform(-1, 1, (16, 1, 48, 48)).astype(np.float32)
    plain = ort.InferenceSession(str(tmp_path / "a" / "plain.onnx")).run(None, {"input": x})[0]
    blended = ort.InferenceSession(str(tmp_path / "b" / "blended.onnx"))
    first, second = blended.run(["logits", "logits_fer2013"], {"input": x})
    np.testing.assert_allclose(first, plain[:, :7], atol=1e-5)
    partner = ExpressionModel.from_name("ferpipe-cnn")
    theirs = partner.session.run(None, {"input": x})[0]

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    expected = 0.5 * (softmax(plain[:, 7:] / info["own_temperature"]) + softmax(theirs / info["partner_temperature"]))
    np.testing.assert_allclose(np.exp(second), expected, atol=2e-3)
    assert info["partner_temperature"] == get_spec("ferpipe-cnn", task="expression").preprocess.temperature
    # ExpressionModel reads each head from its own output
    from ferpipe.registry import ModelSpec

    loaded = ModelSpec.from_dict(spec, base_dir=tmp_path / "b")
    model = ExpressionModel(loaded, path=tmp_path / "b" / "blended.onnx", head="fer2013")
    assert model.output_names == ["logits_fer2013"]
    assert ExpressionModel(loaded, path=tmp_path / "b" / "blended.onnx").output_names == ["logits"]
    bad = run_cli(*common, "--out", str(tmp_path / "c"), "--name", "c", "--blend", "nope=ferpipe-cnn", env=env)
    assert bad.returncode == 1 and "blend names heads ['nope']" in bad.stderr


def test_class_balanced_draws_even_out_each_datasets_classes():
    """Dataset 0 (FER-like) has 6 happy and 2 disgust, dataset 1 (wild) 3 neutral and 1 fear. With b=1 each
    class of a dataset is drawn equally often and the datasets keep their shares; b=0 leaves the classes as found."""
    import numpy as np

    from ferpipe.lab.train import TrainConfig, TrainingSet, sampling_weights

    labels = np.array([3] * 6 + [1] * 2 + [6] * 3 + [2])
    ts = TrainingSet(heads=("ferplus",), images=np.zeros((12, 48, 48), np.uint8),
                     targets=np.eye(7, dtype=np.float32)[labels], head=np.zeros(12, np.int64), select=(),
                     source=np.array([0] * 8 + [1] * 4), names=("fer", "expw"), wild=(False, True))  # fmt: skip
    flat = sampling_weights(ts, 0.5)
    even = sampling_weights(ts, 0.5, class_balance=1.0)
    for p in (flat, even):
        assert p.sum() == pytest.approx(1.0)
        assert p[:8].sum() == pytest.approx(0.5) and p[8:].sum() == pytest.approx(0.5)
    assert flat[:6].sum() == pytest.approx(0.5 * 6 / 8)  # as found
    assert even[:6].sum() == pytest.approx(0.25) and even[6:8].sum() == pytest.approx(0.25)
    assert even[8:11].sum() == pytest.approx(0.25) and even[11] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="class_balance"):
        TrainConfig(class_balance=1.5)
    with pytest.raises(ValueError, match="epoch_size"):
        TrainConfig(class_balance=1.0)
