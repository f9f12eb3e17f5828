"""The built wheel, installed into a fresh virtual environment outside the checkout, is a whole ferpipe: the same
default model, the dashboard it serves, and the commands.

To stay fast and offline the new environment takes the project's already-installed dependencies through a .pth
line (.pth files inside that folder, such as the checkout's editable install, are not read from there), and the
wheel itself is installed with --no-deps: everything ferpipe is comes from the wheel.
"""

import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, free_port


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO),
                            "-w", str(tmp / "dist")], capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp / "dist").glob("ferpipe-*.whl"))
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp / "elsewhere"  # not the checkout
    work.mkdir()
    return env_dir, work, wheel


def _run(env_dir, work, *args, env=None, timeout=600):
    full = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full.update(env or {})
    return subprocess.run([str(env_dir / "bin" / "ferpipe"), *args], cwd=work, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=full, timeout=timeout)  # fmt: skip


def test_the_wheel_carries_the_default_model_and_the_dashboard(wheel_env, samples, tmp_path):
    env_dir, work, _wheel = wheel_env
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import ferpipe, ferpipe.config as c; "
                            "print(ferpipe.__file__); print(c.bundled('models')); print(c.bundled('dashboard'))"],
                           cwd=work, capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert all(str(REPO) not in p for p in where), where  # ferpipe, its models and dashboard: all from the wheel
    models = json.loads(_run(env_dir, work, "models", "list", "--json").stdout)
    default = [m["name"] for m in models if m["default"]]
    assert default == ["ferpipe-cnn3"] and {"ferpipe-cnn", "ferpipe-cnn2"} <= {m["name"] for m in models}
    db = tmp_path / "w.duckdb"
    r = _run(env_dir, work, "process", str(samples["single_face.mp4"]), "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["faces"] == 1
    port = free_port()
    server = subprocess.Popen([str(env_dir / "bin" / "ferpipe"), "dashboard", "--db", str(db), "--port", str(port)],
                              cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the installed dashboard did not start"
                time.sleep(0.5)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "<noscript>" in page or "streamlit" in page.lower()
    finally:
        server.terminate()
        server.wait(15)
    # stopping `ferpipe dashboard` by its PID stops the Streamlit server it started (no orphan left serving)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
        except OSError:
            break
        assert time.monotonic() < deadline, "the dashboard's server outlived `ferpipe dashboard`"
        time.sleep(0.5)


def test_the_installed_demo_processes_the_samples(wheel_env, samples, tmp_path):
    env_dir, work, _ = wheel_env
    r = _run(env_dir, work, "demo", "--no-dashboard", "--db", str(tmp_path / "demo.duckdb"),
             env={"FERPIPE_SAMPLES": str(Path(samples["single_face.mp4"]).parent)}, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Audience grid (10 people): processed, 10 people (from " in r.stdout
    assert "not what people feel" in r.stdout
