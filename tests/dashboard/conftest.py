"""A seeded database for the dashboard tests: three sample clips in two tag groups."""

from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture(scope="session")
def shot():
    """dashboard/screenshot.py as a module: ``serve`` (a real dashboard server) and the Chromium arguments."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dashboard_screenshot", APP.with_name("screenshot.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory, samples):
    from ferpipe.detect import MTCNNDetector
    from ferpipe.expression import ExpressionModel
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.store import Store

    db = tmp_path_factory.mktemp("seeded") / "ferpipe.duckdb"
    store = Store(db)
    p = Pipeline(store, Settings(model="mini-xception", sample_fps=2.0), detector=MTCNNDetector(),
                 model=ExpressionModel.from_name("mini-xception"))  # fmt: skip
    ids = {}
    for name, tags in (("audience_grid.mp4", {"group": "A"}), ("WolfgangLanger_Pexels.mp4", {"group": "B"}),
                       ("single_face.mp4", {"group": "B"})):  # fmt: skip
        ids[name] = p.process(str(samples[name]), tags=tags).clip_id
    return db, ids


@pytest.fixture
def app(seeded_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FERPIPE_DB", str(seeded_db[0]))
    at = AppTest.from_file(str(APP), default_timeout=120)
    return at
