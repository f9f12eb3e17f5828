"""Devices (#26): the ONNX Runtime providers a --device choice gets, checked where it enters, recorded with each
run; readings on any device match the CPU's (here: CPU and auto, the devices this machine has)."""

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_cli

from ferpipe.onnx import providers_for, usable_devices
from ferpipe.pipeline import Settings
from ferpipe.store import Store


def test_providers_for_each_device():
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    auto = providers_for("auto")
    assert auto[-1] == "CPUExecutionProvider" and set(auto) <= set(ort.get_available_providers())
    assert usable_devices()[:2] == ["auto", "cpu"]
    for device in ("cuda", "openvino"):
        if device in usable_devices():
            assert providers_for(device)[0].lower().startswith(device[:4])
        else:  # this machine lacks it: one line saying what it needs
            with pytest.raises(ValueError, match=f"--device {device} needs onnxruntime-"):
                providers_for(device)
    with pytest.raises(ValueError, match="--device must be one of auto, cpu, cuda, openvino, got 'tpu'"):
        providers_for("tpu")
    with pytest.raises(ValueError, match="got 'gpu'"):
        Settings(device="gpu")


def test_the_device_is_recorded_with_each_run_and_readings_match(tmp_path, samples):
    got = {}
    for device in ("cpu", "auto"):
        db = tmp_path / f"{device}.duckdb"
        r = run_cli("process", str(samples["single_face.mp4"]), "--db", str(db), "--model", "mini-xception",
                    "--device", device)  # fmt: skip
        assert r.returncode == 0, r.stderr
        store = Store(db)
        recorded = store.query("SELECT device FROM runs")["device"][0]
        assert recorded.startswith(f"{device}: ONNX Runtime on ") and "face mesh: LiteRT on the CPU" in recorded
        got[device] = store.query("SELECT happy, neutral, yaw_deg FROM observations ORDER BY timestamp_ms, face_id")
    assert got["cpu"].height == got["auto"].height > 0
    for c in got["cpu"].columns:  # the tolerance runs are held to across devices (README, "Devices")
        assert np.nanmax(np.abs(got["cpu"][c].to_numpy() - got["auto"][c].to_numpy())) <= 1e-4, c
    r = run_cli("process", str(samples["single_face.mp4"]), "--db", str(tmp_path / "x.duckdb"), "--device", "cuda")
    if "cuda" not in usable_devices():
        assert r.returncode == 1 and r.stderr.startswith("error: --device cuda needs onnxruntime-gpu")
        assert not (tmp_path / "x.duckdb").exists()  # refused before anything was stored
