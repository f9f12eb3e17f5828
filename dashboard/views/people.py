"""People: who is who in a clip. Merge, split and name people, and give respondents their attributes."""

import polars as pl
import streamlit as st
from common import caveat, clip_picker, plain, store

from ferpipe import present as pr
from ferpipe.errors import FerpipeError
from ferpipe.media import frame_at, thumbnail
from ferpipe.people import import_attributes, relink

st.title("People")
caveat()
st.caption("A person is one or more face tracks: the tracker starts a new track whenever someone is hidden or "
           "leaves and comes back, and ferpipe links those back together. Correct it here; your corrections are "
           "kept and applied again when the clip is processed again.")  # fmt: skip
clip = clip_picker(with_faces=True, key="people_clip")
if clip is None:
    st.stop()
s = store()
clip_id = clip["clip_id"]
run_id = s.best_run(clip_id)
if run_id is None:
    st.info("This clip has not been processed yet.")
    st.stop()
people = s.people(run_id)
attrs = s.attributes([clip_id])
st.metric(pr.PEOPLE.name, pr.PEOPLE.format(people.height),
          help=f"from {pr.TRACKS.format(int(people['tracks'].sum() or 0))} face tracks")  # fmt: skip

identified = (s.run(run_id).settings or {}).get("identification", True)
if not identified:
    st.caption("Processed without identification: no face descriptors were stored, people were linked by time and "
               "place only, and faces are never shown.")  # fmt: skip
show = identified and st.toggle(
    "Show face thumbnails", value=False, help="Off by default for privacy; blurred unless you say otherwise."
)
if show:
    blur = st.toggle("Blur thumbnails", value=True)
    cols = st.columns(min(6, max(1, people.height)))
    for k, r in enumerate(people.iter_rows(named=True)):
        try:
            t, cx, cy = s.anchor(run_id, r["person_id"])
            box = s.faces_at(run_id, t, 1.0).filter(pl.col("face_id").is_in(
                s.faces(run_id).filter(pl.col("person_id") == r["person_id"])["face_id"].to_list()))  # fmt: skip
            frame = frame_at(clip["path"], t)
            b = box.row(0, named=True) if box.height else {"x": cx - 40, "y": cy - 40, "w": 80, "h": 80}
            cols[k % len(cols)].image(thumbnail(frame, (b["x"], b["y"], b["w"], b["h"]), blur=blur),
                                      caption=plain(r["person"] or f"person {r['person_id']}"), width=96)  # fmt: skip
        except (FerpipeError, ValueError):
            continue

st.subheader("Names and respondent attributes")
st.caption("Edit names and attributes in the table. To add an attribute (e.g. gender, age_band, segment), type its "
           "name in the box below and a column appears. A person needs a name to carry attributes.")  # fmt: skip
wide = (
    attrs.pivot(on="key", index="person", values="value")
    if attrs.height
    else pl.DataFrame({"person": []}, schema={"person": pl.String})
)
table = (
    people.with_columns(
        (pl.col("first_seen_ms") / 1000).round(1).alias("first_s"),
        (pl.col("last_seen_ms") / 1000).round(1).alias("last_s"),
        pl.col("person").fill_null(""),
    )
    .select("person_id", "person", "tracks", "n_obs", "first_s", "last_s")
    .join(wide, on="person", how="left")
)
new_attr = st.text_input("Add an attribute column", placeholder="e.g. age_band")
if new_attr.strip() and new_attr.strip() not in table.columns:
    table = table.with_columns(pl.lit(None, dtype=pl.String).alias(new_attr.strip()))
FIXED = ["person_id", "tracks", "n_obs", "first_s", "last_s"]
edited = st.data_editor(
    table.to_pandas(), hide_index=True, disabled=FIXED, key="people_table",
    column_config={"person_id": st.column_config.NumberColumn("Person", format="%d"),
                   "person": st.column_config.TextColumn("Name", help="Empty: shown as 'person N'."),
                   "tracks": st.column_config.NumberColumn("Face tracks", format="%d"),
                   "n_obs": st.column_config.NumberColumn("Readings", format="%d"),
                   "first_s": st.column_config.NumberColumn("First seen (s)", format="%.1f"),
                   "last_s": st.column_config.NumberColumn("Last seen (s)", format="%.1f")},
)  # fmt: skip
if st.button("Save names and attributes", type="primary"):
    keys = [c for c in edited.columns if c not in ("person", *FIXED)]
    for row in edited.to_dict("records"):
        name = (row.get("person") or "").strip() if isinstance(row.get("person"), str) else ""
        before = people.filter(pl.col("person_id") == row["person_id"])["person"][0]
        if name and name != before:
            s.add_edit(clip_id, "name", s.anchor(run_id, int(row["person_id"])), label=name)
        values = {k: str(row[k]) for k in keys if isinstance(row.get(k), str) and row[k].strip()}
        if name and values:
            s.set_attributes(clip_id, name, values)
    relink(s, run_id, clip_id)
    st.success("Saved.")
    st.rerun()

with st.expander("Import attributes from a CSV"):
    st.caption("Columns: clip, person (a person id above, or a name), then one column per attribute.")
    upload = st.file_uploader("Respondents CSV", type=["csv"], key="attrs_csv")
    if upload is not None and st.button("Import"):
        path = s.path.parent / f".respondents-{clip_id}.csv"
        path.write_bytes(upload.getvalue())
        try:
            st.success(f"Attributes set for {pr.people_words(import_attributes(s, path))}.")
        except (FerpipeError, ValueError) as exc:
            st.error(plain(exc))
        finally:
            path.unlink(missing_ok=True)

names = {r["person_id"]: r["person"] or f"person {r['person_id']}" for r in people.iter_rows(named=True)}
c1, c2 = st.columns(2)
with c1:
    st.subheader("Merge")
    pick = st.multiselect("These are one person", list(names), format_func=names.get, key="merge_pick")
    if st.button("Merge", disabled=len(pick) < 2):
        first = s.anchor(run_id, pick[0])
        for other in pick[1:]:
            s.add_edit(clip_id, "merge", first, s.anchor(run_id, other))
        relink(s, run_id, clip_id)
        st.rerun()
with c2:
    st.subheader("Split")
    who = st.selectbox("Person", list(names), format_func=names.get, key="split_person")
    tracks = s.faces(run_id).filter(pl.col("person_id") == who)
    if tracks.height < 2:
        st.caption("This person is one track: nothing to split.")
    else:
        labels = {r["face_id"]: f"track {r['face_id']}: {r['first_seen_ms'] / 1000:.1f}–{r['last_seen_ms'] / 1000:.1f} s"
                  for r in tracks.iter_rows(named=True)}  # fmt: skip
        track = st.selectbox("Track that is someone else", list(labels), format_func=labels.get)
        if st.button("Make it a person of its own"):
            s.add_edit(clip_id, "split", s.track_anchor(run_id, track))
            relink(s, run_id, clip_id)
            st.rerun()
