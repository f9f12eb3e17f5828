"""AppTest smoke tests: every page renders against a seeded DB without exceptions, showing real content."""

import json
from pathlib import Path

import numpy as np
import pytest


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_library_lists_the_clips(app, seeded_db):
    app.run()
    _ok(app)
    table = app.dataframe[0].value
    assert set(table["Clip id"]) == set(seeded_db[1].values())
    assert any("not what people feel" in c.value for c in app.caption)


def test_clip_view_draws_curves_shares_and_peaks(app, seeded_db):
    app.query_params["clip"] = seeded_db[1]["audience_grid.mp4"]
    app.switch_page("views/clip.py").run()
    _ok(app)
    charts = app.get("plotly_chart")
    # curves, shares, valence/arousal, attention, head pose, facial actions, per-face; no blink-rate curve at 2 fps
    assert len(charts) >= 7 and "blinks" not in {getattr(c, "key", None) for c in charts}
    peaks = next(df.value for df in app.dataframe if "Prominence" in df.value.columns)  # named in words
    assert list(peaks.columns) == ["Expression", "At", "Mean probability", "Prominence", "People in view"]
    assert len(peaks) > 0 and all(v.endswith("%") for v in peaks["Mean probability"])
    labels = [m.label for m in app.metric]
    assert labels[:7] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert "Blinks per minute" in labels
    blink = next(m for m in app.metric if m.label == "Blinks per minute")
    assert blink.value == "—" and any("not reported at 2 frames/s" in c.value for c in app.caption)  # as in the report
    means = [float(m.value.rstrip("%")) for m in app.metric[:7]]
    assert 95 <= sum(means) <= 105  # mean probabilities of the clip, the level of the curves: they sum to 1
    moment = next(sl for sl in app.slider if sl.label == "Moment (s)")
    assert moment.max <= 19.8  # never beyond the clip (the grid is as long as WolfgangLanger, 19.7 s)
    assert any("not FACS action units" in c.value for c in app.caption)
    assert any("±30° yaw and ±20° pitch" in c.value for c in app.caption)  # the run's own attention cone
    sync = next(df.value for df in app.dataframe if "Mean r" in df.value.columns)  # ten people on the grid
    assert sync["Pairs of people"].map(int).max() >= 10 and sync["Mean r"].map(float).abs().max() <= 1


def test_clip_view_quality_filter_says_what_it_leaves_out(app, seeded_db):
    app.query_params["clip"] = seeded_db[1]["audience_grid.mp4"]
    app.switch_page("views/clip.py").run()
    next(c for c in app.checkbox if c.label == "Attentive faces only").check().run()
    _ok(app)
    notes = [c.value for c in app.caption if "observations are left out" in c.value]
    assert notes and "attentive faces only" in notes[0]


def test_clip_view_draws_the_facial_actions_picked(app, seeded_db):
    """The page reads every section's bins in one scan, including the facial actions picked: a new pick is drawn."""
    import json

    from ferpipe import analytics as an

    app.query_params["clip"] = seeded_db[1]["audience_grid.mp4"]
    app.switch_page("views/clip.py").run()

    def traces():
        chart = next(c for c in app.get("plotly_chart") if c.proto.id and "actions" in c.proto.id)
        return {t.get("name") for t in json.loads(chart.proto.spec)["data"]}

    assert an.SIGNAL_INFO["au12_proxy"].label in traces()
    next(m for m in app.multiselect if m.label == "Blendshapes or AU proxies").set_value(["bs_jawOpen"]).run()
    _ok(app)
    assert an.SIGNAL_INFO["bs_jawOpen"].label in traces() and an.SIGNAL_INFO["au12_proxy"].label not in traces()
    next(c for c in app.checkbox if c.label == "Attentive faces only").check().run()  # a filter: two scans
    _ok(app)
    assert an.SIGNAL_INFO["bs_jawOpen"].label in traces()


def test_clip_view_controls_change_the_curves(app, seeded_db):
    app.query_params["clip"] = seeded_db[1]["WolfgangLanger_Pexels.mp4"]
    app.switch_page("views/clip.py").run()
    app.select_slider[0].set_value(5.0).run()
    _ok(app)
    app.slider[0].set_value(3).run()  # smoothing
    _ok(app)


def _stats(app):
    stats = next(d.value for d in app.dataframe if "Hedges' g" in d.value.columns)
    return stats.assign(**{c: stats[c].map(lambda v: int(v.replace(",", ""))) for c in ("People A", "People B")})


def test_compare_clips_segments_and_respondents(app, seeded_db):
    from ferpipe.store import Store

    app.switch_page("views/compare.py").run()
    _ok(app)
    stats = _stats(app)
    assert {"Signal", "p-value", "Hedges' g", "People A", "People B", "Mean over people A"} <= set(stats.columns)
    # the default: the two sides with the most people, here the tag groups (grid: 10 vs two single viewers: 2), not
    # the grid against a one-person clip
    assert app.radio[2].value == "Tag groups (segments)"
    assert stats["People A"].iloc[0] == 10 and stats["People B"].iloc[0] == 2
    norms = next(d.value for d in app.dataframe if "Percentile" in d.value.columns)
    assert list(norms.columns[:2]) == ["Title", "Clip id"]  # the title first
    assert (norms["Clips in norm set"] == "2").all()  # each clip against the two others
    app.radio[2].set_value("Tag groups (segments)").run()
    _ok(app)
    stats = _stats(app)
    assert stats["People A"].iloc[0] == 10 and stats["People B"].iloc[0] == 2  # grid people vs two single viewers
    db, ids = seeded_db
    store = Store(db)
    grid = ids["audience_grid.mp4"]
    run_id = store.best_run(grid)
    people = store.people(run_id)["person_id"].to_list()
    from ferpipe.people import relink

    for k, pid in enumerate(people):
        store.add_edit(grid, "name", store.anchor(run_id, pid), label=f"R{k}")
    relink(store, run_id, grid)
    for k in range(len(people)):
        store.set_attributes(grid, f"R{k}", {"gender": "f" if k % 2 else "m"})
    app.radio[2].set_value("Respondents (people by attribute)").run()
    _ok(app)
    stats = _stats(app)
    assert stats["People A"].iloc[0] == 5 and stats["People B"].iloc[0] == 5  # ten people split by gender


def test_export_builds_on_demand_and_offers_every_download(app):
    app.switch_page("views/export.py").run()
    _ok(app)
    assert not app.get("download_button")  # nothing is built on page load
    assert not app.code  # and no stray return values printed under the buttons
    next(b for b in app.button if b.label == "Prepare data files").click().run()
    next(b for b in app.button if b.label == "Build the reports").click().run()
    _ok(app)
    labels = {b.label for b in app.get("download_button")}
    assert {"HTML report", "PDF report", "Aggregated curves (csv)", "Per-person timelines (parquet)"} <= labels
    assert not app.code
    assert app.markdown  # the findings, in words


def test_models_page_lists_models_and_runs(app, seeded_db, tmp_path, monkeypatch):
    from ferpipe.lab.evaluate import save_report, summarise
    from ferpipe.registry import get_spec

    monkeypatch.setenv("FERPIPE_CACHE", str(tmp_path))
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "svm-hog.json").write_text(json.dumps(
        {"arch": "svm-hog", "C": 0.1, "accuracy": 0.5, "macro_f1": 0.4, "svm_ms_per_face": 0.01, "n": 4}))  # fmt: skip
    probs = np.eye(7)[[0, 3, 3, 6]]
    save_report({**summarise(probs, np.array([0, 3, 4, 6])), "model": "mini-xception", "split": "public_test",
                 "flip": False, "ms_per_face": 0.3})  # fmt: skip
    app.switch_page("views/models.py").run()
    _ok(app)
    models = app.dataframe[0].value
    row = models[models["Model"] == "mini-xception"].iloc[0]
    assert row["FER2013 accuracy"] == "75.0%" and row["ms per face"] == "0.30" and row["FER2013 images"] == "4"
    cnn = models[models["Model"] == "ferpipe-cnn"].iloc[0]
    pct = lambda v: float(v.split("%")[0]) / 100  # noqa: E731
    assert pct(cnn["FER2013 accuracy"]) > 0.6 and int(cnn["FER2013 images"].replace(",", "")) > 0  # never "n=?"
    new = models[models["Default"] == "yes"].iloc[0]  # the shipped default shows its FER+ and cross-domain figures
    assert new["Model"] == "ferpipe-cnn3" and pct(new["FER+ accuracy"]) > 0.85
    domains = next(df.value for df in app.dataframe if "Dev set" in df.value.columns)
    shown = set(domains[domains["Model"] == "ferpipe-cnn3"]["Dev set"])
    assert {
        "ExpW (web photos)",
        "JAFFE (posed, Japanese women)",
        "IMFDB (Indian movie frames)",
        "LFW-emotion (news photos)",
        "FER+ (FER2013 faces, 10 annotators)",
    } <= shown  # named, not file stems
    assert not any("None" in str(v) or "nan" in str(v) for v in models.to_numpy().ravel())
    assert len(app.get("plotly_chart")) == 1  # the confusion matrix
    base = next(df.value for df in app.dataframe if "Algorithm" in df.value.columns)  # a baseline run here wins
    assert base[base["Algorithm"] == "svm-hog"].iloc[0]["Accuracy"] == "50.0%"
    runs = next(df.value for df in app.dataframe if "Model version" in df.value.columns)
    assert len(runs) == 3 and set(runs["Model"]) == {"mini-xception"}
    assert set(runs["Model version"]) == {get_spec("mini-xception").fingerprint}


@pytest.mark.parametrize("bad", ["group", "=x"])
def test_library_rejects_bad_tags(app, bad):
    app.run()
    app.text_input[1].input(bad).run()
    assert any("is not KEY\\=VALUE" in e.value for e in app.error)  # shown as plain text


def test_clip_view_with_a_linked_stimulus(app, seeded_db):
    from ferpipe.store import Store

    db, ids = seeded_db
    audience, stimulus = ids["audience_grid.mp4"], ids["WolfgangLanger_Pexels.mp4"]
    Store(db).set_stimulus(audience, stimulus, 2.0)
    try:
        app.query_params["clip"] = audience
        app.switch_page("views/clip.py").run()
        _ok(app)
        assert app.toggle[0].label == "Plot against stimulus time" and app.toggle[0].value
        assert any(c.value.startswith("Stimulus at") for c in app.caption)
        moment = next(sl for sl in app.slider if sl.label == "Moment (s)")
        assert moment.min == pytest.approx(-2.0)  # curves start at stimulus time -offset
    finally:
        Store(db).set_stimulus(audience, None, 0.0)


def test_clip_view_thumbnails_show_the_faces_in_view(app, seeded_db):
    app.query_params["clip"] = seeded_db[1]["audience_grid.mp4"]
    app.switch_page("views/clip.py").run()
    toggle = next(t for t in app.toggle if t.label == "Show face thumbnails")
    assert not toggle.value  # off by default for privacy
    toggle.set_value(True).run()
    _ok(app)
    from ferpipe.store import Store

    store = Store(seeded_db[0])
    run_id = store.best_run(seeded_db[1]["audience_grid.mp4"])
    names = {r["person"] or f"person {r['person_id']}" for r in store.people(run_id).iter_rows(named=True)}
    thumbs = [im for im in app.get("image") if im.captions and set(im.captions) <= names]
    assert len(thumbs) == 1  # named as on the People page: the person's name, or "person N"
    assert len(thumbs[0].captions) >= 5


def test_models_page_overlays_two_models_on_one_clip(app, seeded_db, samples, tmp_path, monkeypatch):
    import shutil

    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.store import Store

    db = tmp_path / "two_models.duckdb"
    shutil.copy(seeded_db[0], db)
    monkeypatch.setenv("FERPIPE_DB", str(db))
    Pipeline(Store(db), Settings(model="ferpipe-cnn", sample_fps=2.0)).process(str(samples["single_face.mp4"]))
    app.query_params["clip"] = seeded_db[1]["single_face.mp4"]
    app.switch_page("views/models.py").run()
    _ok(app)
    overlay = [c for c in app.get("plotly_chart") if c.proto.id and "model_overlay" in c.proto.id]
    assert len(overlay) == 1
    traces = {t.get("name") for t in json.loads(overlay[0].proto.spec)["data"]}
    assert {"mini-xception", "ferpipe-cnn"} <= traces


def test_titles_and_tags_are_plain_text_everywhere(app, seeded_db):
    """A title carrying Markdown (an image that would make the browser fetch a URL) is shown escaped."""
    from ferpipe.store import Store

    db, ids = seeded_db
    store = Store(db)
    clip_id = ids["single_face.mp4"]
    old = store.clip(clip_id)["title"]
    evil = "![t](http://127.0.0.1:8765/track.png) **bold**"
    store.upsert_clip(clip_id, {}, {}, title=evil)
    try:
        app.run()
        app.selectbox(key="delete_clip").select(clip_id).run()
        app.checkbox[1].check().run() if len(app.checkbox) > 1 else None
        labels = [c.label for c in app.checkbox]
        assert any("\\!\\[t\\]\\(http" in lbl for lbl in labels), labels
        assert not any("![t](" in lbl for lbl in labels)
        for page in ("views/compare.py", "views/clip.py", "views/export.py", "views/models.py"):
            app.switch_page(page).run()
            shown = [e.value for kind in ("markdown", "subheader", "caption", "title", "header", "info", "warning",
                                          "error", "success") for e in getattr(app, kind)]  # fmt: skip
            assert not any("![t](" in str(v) for v in shown), (page, shown)
    finally:
        store.upsert_clip(clip_id, {}, {}, title=old)


def test_people_page_names_merges_and_splits(app, seeded_db):
    from ferpipe.store import Store

    db, ids = seeded_db
    store = Store(db)
    grid = ids["audience_grid.mp4"]
    run_id = store.best_run(grid)
    before = store.people(run_id).height
    app.query_params["clip"] = grid
    app.switch_page("views/people.py").run()
    _ok(app)
    assert app.metric[0].value == str(before)
    a, b = store.people(run_id).sort("person_id")["person_id"].to_list()[:2]
    app.multiselect(key="merge_pick").set_value([a, b]).run()
    next(bt for bt in app.button if bt.label == "Merge").click().run()
    _ok(app)
    assert store.people(run_id).height == before - 1
    # the merged person has two tracks now: detach one again
    merged = store.people(run_id).filter(store.people(run_id)["tracks"] >= 2)["person_id"][0]
    app.selectbox(key="split_person").set_value(merged).run()
    next(bt for bt in app.button if bt.label == "Make it a person of its own").click().run()
    _ok(app)
    assert store.people(run_id).height == before
    store.query("SELECT 1")  # the page wrote through the store; nothing left half-done


def test_clip_view_markers_are_added_drawn_and_summarised(app, seeded_db):
    from ferpipe.store import Store

    db, ids = seeded_db
    clip = ids["WolfgangLanger_Pexels.mp4"]
    app.query_params["clip"] = clip
    app.switch_page("views/clip.py").run()
    app.text_input(key="marker_name").input("brand reveal")
    app.number_input(key="marker_start").set_value(5.0)
    app.number_input(key="marker_end").set_value(8.0).run()
    next(b for b in app.button if b.label == "Add marker").click().run()
    _ok(app)
    try:
        assert Store(db).markers(clip)["name"].to_list() == ["brand reveal"]
        stats = next(d.value for d in app.dataframe if "Change during" in d.value.columns)
        assert set(stats["Marker"]) == {"brand reveal"} and stats["People during"].iloc[0] == "1"
        shapes = app.get("plotly_chart")[0].proto.spec
        assert "brand reveal" in shapes  # drawn on the curves
    finally:
        for m in Store(db).markers(clip)["marker_id"].to_list():
            Store(db).delete_marker(m)


def test_panel_page_makes_signed_links(app, seeded_db):
    """The Panel page makes one signed link per respondent and lists each link's state."""
    stimulus = seeded_db[1]["WolfgangLanger_Pexels.mp4"]
    app.switch_page("views/panel.py").run()
    _ok(app)
    options = app.selectbox[0].options
    assert any(stimulus in o for o in options)
    app.selectbox[0].select(next(o for o in app.selectbox[0].options if stimulus in o)).run()
    assert any("not what people feel" in c.value for c in app.caption)
    app.text_area(key="link_ids").input("p1\np2").run()
    next(b for b in app.button if b.label == "Make links").click().run()
    _ok(app)
    made = next(d.value for d in app.dataframe if "link" in d.value.columns)
    assert list(made["respondent"]) == ["p1", "p2"]
    assert all("/panel?link=" in u and stimulus not in u.split("link=")[0] for u in made["link"])
    states = next(d.value for d in app.dataframe if "State" in d.value.columns)
    assert set(states["Respondent"]) >= {"p1", "p2"} and set(states["State"]) == {"sent"}


def test_panel_respondent_view_and_bad_links(app, seeded_db):
    """A signed link shows the respondent's panel and nothing else; a forged, an unsigned or an old-style link gets
    a plain page."""
    from ferpipe.access import create_link
    from ferpipe.store import Store

    store = Store(seeded_db[0])
    _, token = create_link(store, seeded_db[0], seeded_db[1]["single_face.mp4"], "v1")
    app.query_params["link"] = token[:-3] + "abc"
    app.run()
    assert any(t.value == "This link is not valid" for t in app.title)
    app.query_params.clear()
    app.run()  # the researcher's navigation again
    app.query_params["stimulus"] = seeded_db[1]["single_face.mp4"]
    app.switch_page("views/panel.py").run()
    assert any("signed per respondent" in e.value for e in app.error)
    app.query_params.clear()
    app.query_params["link"] = token
    app.run()
    _ok(app)
    assert not app.title  # the respondent sees the panel only, none of the researcher's pages
    assert app.get("iframe")


def test_every_chart_downloads_as_png_or_svg(app, seeded_db):
    """Each chart carries Plotly's download button, in the format chosen in the sidebar."""
    import json as _json

    app.switch_page("views/clip.py").run()
    _ok(app)
    charts = app.get("plotly_chart")
    assert charts
    configs = [_json.loads(c.proto.config) for c in charts]
    assert all(c["toImageButtonOptions"]["format"] == "png" for c in configs), configs
    app.sidebar.radio(key="chart_format").set_value("svg").run()
    configs = [_json.loads(c.proto.config) for c in app.get("plotly_chart")]
    assert configs and all(c["toImageButtonOptions"]["format"] == "svg" for c in configs)


def test_clip_view_of_a_live_clip_follows_its_edge_and_draws_the_curves(app, seeded_db):
    """A clip being analysed live: the latency line, the follow toggle, and the curves of the last 60 s."""
    import os

    import duckdb

    db, ids = seeded_db
    clip = ids["audience_grid.mp4"]

    def sql(*statements: tuple[str, list]) -> None:
        with duckdb.connect(str(db)) as con:
            for text, params in statements:
                con.execute(text, params)

    sql(("UPDATE clips SET live_t0 = epoch(now()) - 30 WHERE clip_id = ?", [clip]),
        ("UPDATE runs SET status = 'running', pid = ? WHERE clip_id = ?", [os.getpid(), clip]))  # fmt: skip
    try:
        app.query_params["clip"] = clip
        app.switch_page("views/clip.py").run()
        _ok(app)
        assert any("Live:" in i.value and "behind the stream" in i.value for i in app.info)
        assert not any("No faces" in w.value for w in app.warning)
        assert len(app.get("plotly_chart")) >= 3
    finally:
        sql(("UPDATE runs SET status = 'done' WHERE clip_id = ?", [clip]),
            ("UPDATE clips SET live_t0 = NULL WHERE clip_id = ?", [clip]))  # fmt: skip


def test_clip_view_scores_and_baseline(app, seeded_db):
    """The Scores panel: every named metric with its interval and index; a first-seconds baseline turns the tiles
    and level scores into changes from each person's baseline and says so."""
    app.query_params["clip"] = seeded_db[1]["audience_grid.mp4"]
    app.switch_page("views/clip.py").run()
    _ok(app)
    scores = next(df.value for df in app.dataframe if "95% interval" in df.value.columns)
    assert list(scores["Metric"])[:3] == ["Peak", "Peak time", "End level"] and len(scores) == 9
    assert scores.loc[scores["Metric"] == "Peak", "Value"].iloc[0].endswith("%")
    assert any("Engagement (derived): not shown" in c.value for c in app.caption)  # 3 clips in the library
    raw_tiles = [m.value for m in app.metric[:7]]
    app.selectbox(key="clip_baseline_kind").set_value("first").run()
    _ok(app)
    assert any(i.value.startswith("Baseline: each person's first 3 s in view, subtracted") for i in app.info)
    tiles = [m.value for m in app.metric[:7]]
    assert tiles != raw_tiles and all(t.endswith(" pts") or t == "0 pts" for t in tiles)
    scores = next(df.value for df in app.dataframe if "95% interval" in df.value.columns)
    assert scores.loc[scores["Metric"] == "Peak", "Value"].iloc[0].endswith(" pts")


def test_compare_scores_and_baseline(app, seeded_db):
    """Compare's Scores: both sides' metrics and a person-level test per metric; with a baseline the summary's levels
    read as changes from baseline, and the page says how many people each side kept."""
    app.switch_page("views/compare.py").run()
    _ok(app)
    tests = next(d.value for d in app.dataframe if {"Metric", "Hedges' g", "Note"} <= set(d.value.columns))
    assert len(tests) == 9 and tests["People"].iloc[0] == "10 vs 2"
    sides = [d.value for d in app.dataframe if "95% interval" in d.value.columns]
    assert len(sides) == 2 and all(len(t) == 9 for t in sides)
    app.selectbox(key="compare_baseline_kind").set_value("first").run()
    _ok(app)
    note = next(i.value for i in app.info if i.value.startswith("Baseline: each person's first 3 s in view"))
    assert "10 people kept" in note and "2 people kept" in note  # group A, group B
    summary = next(d.value for d in app.dataframe if "Clip or segment" in d.value.columns)
    assert summary["Mean over people"].str.endswith("pts").all()


def test_library_forgets_a_respondent(app, seeded_db, tmp_path, monkeypatch):
    """The Library's Forget action on a copy of the seeded library: the respondent's recording is gone, and says so."""
    import shutil

    from streamlit.testing.v1 import AppTest

    from ferpipe.store import Store

    db = tmp_path / "copy.duckdb"
    shutil.copy(seeded_db[0], db)
    store = Store(db)
    single = seeded_db[1]["single_face.mp4"]
    media = tmp_path / "single.mp4"  # the copy's own media file: the seeded library's stays for the other tests
    shutil.copy(store.clip(single)["path"], media)
    with store.transaction() as con:
        con.execute("INSERT INTO clip_tags (clip_id, key, value) VALUES (?, 'respondent', 'r5')", [single])
        con.execute("UPDATE clips SET path = ? WHERE clip_id = ?", [str(media), single])
    monkeypatch.setenv("FERPIPE_DB", str(db))
    at = AppTest.from_file(str(Path(app._script_path)), default_timeout=120)
    at.run()
    at.text_input(key="forget_id").input("r5").run()
    at.checkbox(key="forget_sure").check().run()
    next(b for b in at.button if b.label == "Forget").click().run()
    _ok(at)
    assert any(s.value.startswith("Forgot r5: 1 recordings") for s in at.success)
    assert store.query("SELECT count(*) AS n FROM clips WHERE clip_id = ?", [single])["n"][0] == 0
    assert not media.exists() and Path(Store(seeded_db[0]).clip(single)["path"]).is_file()
