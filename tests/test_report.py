import polars as pl
import pytest

from conftest import run_cli
from ferpipe.report import build_report, render


@pytest.fixture()
def two_clips(pipeline_factory, samples, store):
    p = pipeline_factory()
    a = p.process(str(samples["WolfgangLanger_Pexels.mp4"]), tags={"group": "A"}).clip_id
    b = p.process(str(samples["single_face.mp4"]), tags={"group": "B"}).clip_id
    return store, a, b


def test_report_formats(two_clips, tmp_path):
    store, a, b = two_clips
    data = build_report(store, [a, b], bin_s=1.0)
    html = render(data, "html").decode()
    assert html.count("<script") >= 1 and "Plotly" in html and "not what people feel" in html
    assert "mini-xception" in html and "Comparison" in html and "1 faces vs 1 faces" in html
    pdf = render(data, "pdf")
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    (tmp_path / "c.parquet").write_bytes(render(data, "parquet"))
    curves = pl.read_parquet(tmp_path / "c.parquet")
    assert curves["clip"].n_unique() == 2 and {"t_s", "n_faces", "happy_mean", "happy_lo"} <= set(curves.columns)
    with pytest.raises(ValueError, match="format"):
        render(data, "docx")
    with pytest.raises(ValueError, match="unknown clip"):
        build_report(store, ["nope"])


def test_report_cli(two_clips, tmp_path, db_path):
    _, a, b = two_clips
    for fmt in ("html", "pdf", "csv"):
        out = tmp_path / f"r.{fmt}"
        r = run_cli("report", "--db", str(db_path), "--clip", a, "--clip", b, "--format", fmt, "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert out.stat().st_size > 1000
    r = run_cli("report", "--db", str(db_path), "--clip", "nope", "--format", "html", "--out", str(tmp_path / "x.html"))
    assert r.returncode == 1 and "unknown clip 'nope'" in r.stderr
