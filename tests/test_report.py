import shutil
import subprocess

import polars as pl
import pytest
from conftest import run_cli

from ferpipe.report import build_report, render

RAW_NAMES = ("peak_t_s", "time_above_s", "n_faces", "n_people", "hedges_g", "p_value", "mean_a", "_mean", "_lo")


@pytest.fixture
def three_clips(pipeline_factory, samples, store):
    p = pipeline_factory()
    a = p.process(str(samples["audience_grid.mp4"]), tags={"group": "A"}).clip_id
    b = p.process(str(samples["WolfgangLanger_Pexels.mp4"]), tags={"group": "B"}).clip_id
    c = p.process(str(samples["single_face.mp4"]), tags={"group": "B"}).clip_id
    store.add_marker(a, "brand reveal", 8.0, 11.0)
    return store, a, b, c


def test_report_formats_and_findings(three_clips, tmp_path):
    store, a, b, c = three_clips
    data = build_report(store, [a, b, c], bin_s=1.0)
    # every pair is compared under its own two labels, never two clips pooled under one name
    assert [(x, y) for x, y, _ in data.comparisons] == [
        ("audience_grid", "WolfgangLanger_Pexels"),
        ("audience_grid", "single_face"),
        ("WolfgangLanger_Pexels", "single_face"),
    ]
    assert any(f.startswith("audience_grid: 10 people (from ") for f in data.findings)  # people, from more face tracks
    assert data.clips[0].markers["marker"].unique().to_list() == ["brand reveal"]
    html = render(data, "html").decode()
    assert html.count("<script") >= 1 and "Plotly" in html and "not what people feel" in html
    assert "Summary of findings" in html and "mini-xception" in html and "Comparison" in html
    pdf = render(data, "pdf")
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    (tmp_path / "c.parquet").write_bytes(render(data, "parquet"))
    curves = pl.read_parquet(tmp_path / "c.parquet")
    assert curves["clip"].n_unique() == 3 and {"t_s", "n_people", "happy_mean", "happy_lo"} <= set(curves.columns)
    with pytest.raises(ValueError, match="format"):
        render(data, "docx")
    with pytest.raises(ValueError, match="unknown clip"):
        build_report(store, ["nope"])
    with pytest.raises(ValueError, match="threshold"):
        build_report(store, [a], threshold=1.5)


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler-utils (pdftotext, pdftoppm) is not installed")
def test_every_pdf_page_renders_and_reads_as_a_client_would(three_clips, tmp_path):
    """Each page rendered to PNG; the text has whole titles, stated thresholds and human headers, no raw names."""
    store, a, b, c = three_clips
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(render(build_report(store, [a, b, c]), "pdf"))
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 5 and all(p.stat().st_size > 5_000 for p in pages)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    first = text.split("\f")[0]
    assert "Summary of findings" in first and "Read this first" in first  # findings open the report
    for title in ("audience_grid", "WolfgangLanger_Pexels", "single_face"):
        assert title in text  # whole titles, not cut at an edge
    assert "Time above 0.5" in text and "over 0.5" in text  # the threshold is stated
    assert "Hedges' g" in text and "People A" in text
    for raw in RAW_NAMES:
        assert raw not in text, raw


def test_report_cli(three_clips, tmp_path, db_path):
    _, a, b, _ = three_clips
    for fmt in ("html", "pdf", "csv"):
        out = tmp_path / f"r.{fmt}"
        r = run_cli("report", "--db", str(db_path), "--clip", a, "--clip", b, "--format", fmt, "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert out.stat().st_size > 1000
    r = run_cli("report", "--db", str(db_path), "--clip", "nope", "--format", "html", "--out", str(tmp_path / "x.html"))
    assert r.returncode == 1 and "unknown clip 'nope'" in r.stderr


def test_scores_section_and_baseline_in_both_reports(three_clips, tmp_path):
    """Both reports carry a Scores section with the composite's rule stated; with a baseline every expression figure
    reads as a change from it, the intro and the clip's section say which baseline, and the PDF draws it."""
    from ferpipe.report import sections
    from ferpipe.types import Baseline

    store, a, _, _ = three_clips
    data = build_report(store, [a], baseline=Baseline("first", first_s=3.0))
    secs = sections(data)
    scores = next(s for s in secs if s.heading == "Scores")
    assert list(scores.table["Metric"]) == ["Peak", "Peak time", "End level", "Hook", "Time to first reaction",
                                            "Reacted", "Reaction duration", "Area under the curve",
                                            "Attention retention"]  # fmt: skip
    assert scores.table["Value"][0].endswith(" pts")  # a change from baseline, not a probability
    assert "needs 10" in " ".join(scores.text) and "1 − neutral" in " ".join(scores.text)
    assert any("each person's first 3 s in view, subtracted" in t for s in secs for t in s.text)
    per = next(s for s in secs if s.heading == "Per expression")
    assert per.table["Mean over people"].str.ends_with("pts").all()
    va = next(s for s in secs if s.heading == "Valence and arousal (derived)")  # signed changes, not plain numbers
    assert va.table["Mean over people"].str.contains(r"^[+-]\d\.\d\d$|^0\.00$").all(), va.table
    html = render(data, "html").decode()
    assert "Scores" in html and "change from baseline" in html
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(render(data, "pdf"))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "Scores" in text and "change from baseline" in text and "Attention retention" in text
    raw = sections(build_report(store, [a]))
    assert next(s for s in raw if s.heading == "Scores").table["Value"][0].endswith("%")
    r = run_cli("report", "--db", str(store.path), "--clip", a, "--out", str(tmp_path / "b.html"), "--baseline",
                "first:3", "--score-signal", "surprise")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "surprise curve" in (tmp_path / "b.html").read_text()
    r = run_cli("report", "--db", str(store.path), "--clip", a, "--out", str(tmp_path / "c.html"), "--baseline", "x")
    assert r.returncode != 0 and "unknown baseline" in r.stderr and not (tmp_path / "c.html").exists()
