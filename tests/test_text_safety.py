"""User text (titles, tags, person names, markers) is shown as typed everywhere: never markup, never a link, never a
crash: rich in the CLI, HTML and PDF reports (no mathtext), Plotly labels."""

import re

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferpipe.report import build_report, render

NASTY = ["[/]", "[link=https://example.invalid]click[/link]", "$x$ \\undefinedmacro{x}", "<a href='https://e.invalid'>x</a>",
         "![m](https://e.invalid/p.png)", "**bold** _it_", "=HYPERLINK(\"x\")", "https://example.invalid/path"]  # fmt: skip
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40) | st.sampled_from(NASTY)


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory, samples, detector, model):
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.store import Store

    store = Store(tmp_path_factory.mktemp("text") / "t.duckdb")
    run = Pipeline(store, Settings(sample_fps=2.0), detector=detector, model=model).process(
        str(samples["single_face.mp4"])
    )
    return store, run.clip_id


def _set_text(store, clip_id: str, text: str) -> None:
    with store.transaction() as con:
        con.execute("UPDATE clips SET title = ? WHERE clip_id = ?", [text, clip_id])
        con.execute("DELETE FROM markers WHERE clip_id = ?", [clip_id])
        con.execute("DELETE FROM clip_tags WHERE clip_id = ?", [clip_id])
        con.execute("INSERT INTO clip_tags VALUES (?, 'note', ?)", [clip_id, text])
    store.add_marker(clip_id, text, 0.5, None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(TEXT)
def test_reports_show_user_text_as_typed(one_clip, text):
    store, clip_id = one_clip
    _set_text(store, clip_id, text)
    data = build_report(store, [clip_id])
    html = render(data, "html").decode()
    body = re.sub(r"<script.*?</script>", "", html, flags=re.S)
    assert "e.invalid'>" not in body and "<a " not in body.lower()  # no link made of user text
    pdf = render(data, "pdf")  # no mathtext error, whatever the text
    assert pdf.startswith(b"%PDF")


@pytest.mark.parametrize("text", NASTY)
def test_the_cli_prints_markup_as_text(one_clip, text, tmp_path):
    store, clip_id = one_clip
    _set_text(store, clip_id, text)
    for args in (("clips",), ("markers", "list", "--clip", clip_id), ("people", "list", "--clip", clip_id),
                 ("summary", "--clip", clip_id)):  # fmt: skip
        r = run_cli(*args, "--db", str(store.path), env={"COLUMNS": "400"})
        assert r.returncode == 0, (args, r.stderr)
        assert "\x1b]8;" not in r.stdout  # no terminal hyperlink
        if args[0] in ("clips", "markers"):
            assert text.strip() in r.stdout, (args, r.stdout)
    r = run_cli(
        "report", "--db", str(store.path), "--clip", clip_id, "--format", "pdf", "--out", str(tmp_path / "r.pdf")
    )
    assert r.returncode == 0, r.stderr


def test_plotly_labels_escape_user_text():
    import polars as pl

    from ferpipe.figures import overlay_figure

    agg = pl.DataFrame({"t_s": [0.0, 1.0], "happy_mean": [0.1, 0.2], "happy_lo": [0.0, 0.1], "happy_hi": [0.2, 0.3]})
    fig = overlay_figure({"<a href='https://e.invalid'>x</a>": agg}, "happy", markers=[("<b>m</b>", 0.5, None)])
    names = [t.name for t in fig.data if t.name]
    assert names == ["&lt;a href='https://e.invalid'&gt;x&lt;/a&gt;"]
    assert all("<" not in (a.text or "") for a in fig.layout.annotations)


PAGES = ("views/library.py", "views/clip.py", "views/people.py", "views/compare.py", "views/panel.py",
         "views/export.py", "views/models.py")  # fmt: skip


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_every_page_shows_user_text_without_crashing(one_clip, monkeypatch, text):
    """The same text as title, tag, marker and person name on every dashboard page (AppTest): no exception, and no
    image or link made of it."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    store, clip_id = one_clip
    _set_text(store, clip_id, text)
    run_id = store.best_run(clip_id)
    with store.transaction() as con:
        con.execute("UPDATE faces SET person_label = ? WHERE run_id = ?", [text, run_id])
    monkeypatch.setenv("FERPIPE_DB", str(store.path))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
    at.query_params["clip"] = clip_id
    at.run()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, text, [e.value for e in at.exception])
        for md in at.markdown:  # Markdown rendered from user text would carry its image or link syntax live
            assert "](https://e.invalid" not in md.value.replace("\\\\", ""), (page, md.value)
