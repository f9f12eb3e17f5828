"""Small HTML components of the dashboard (no Streamlit state): the streamed uploader."""

from __future__ import annotations

import html
import json

UPLOADER = """
<div style="font-family: sans-serif; font-size: 14px;">
  <input id="files" type="file" multiple accept="__ACCEPT__" aria-label="Choose videos or photos">
  <button id="go" type="button" style="margin-left: 8px; padding: 4px 14px;">Upload and process</button>
  <div id="log" style="margin-top: 8px;"></div>
</div>
<script>
const cfg = __CONFIG__;
const log = document.getElementById("log");
function row(text) {
  const div = document.createElement("div");
  const bar = document.createElement("progress"); bar.max = 100; bar.value = 0; bar.style.width = "160px";
  const label = document.createElement("span"); label.textContent = " " + text; label.style.marginLeft = "6px";
  div.appendChild(bar); div.appendChild(label); log.appendChild(div);
  return {bar, label};
}
function send(file) {
  const meta = cfg.per_file[file.name] || {};
  const params = new URLSearchParams({name: file.name, title: meta.title || cfg.title || "",
                                      tags: meta.tags || cfg.tags || "", settings: JSON.stringify(cfg.settings),
                                      respondent: meta.respondent || "", stimulus: meta.stimulus || "",
                                      offset_s: meta.offset_s || 0, tags_json: meta.tags_json || ""});
  const r = row(file.name + ": uploading…");
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", cfg.endpoint + "?" + params.toString());
    xhr.setRequestHeader("X-Ferpipe-Token", cfg.token);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) r.bar.value = 100 * e.loaded / e.total; };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) {}
      r.bar.value = 100;
      r.label.textContent = " " + file.name + (xhr.status === 200 ? ": uploaded, processing (progress below)"
                                                                  : ": refused: " + (body.error || xhr.status));
      resolve();
    };
    xhr.onerror = () => { r.label.textContent = " " + file.name + ": upload failed (is the dashboard running "
                                                + "with `ferpipe dashboard`?)"; resolve(); };
    xhr.send(file);
  });
}
document.getElementById("go").onclick = async () => {
  const files = Array.from(document.getElementById("files").files);
  if (!files.length) { row("Choose one or more files first."); return; }
  for (const f of files) { await send(f); }
  document.getElementById("files").value = "";
};
</script>
"""


def uploader_html(endpoint: str, token: str, settings: dict, accept: list[str], title: str = "", tags: str = "",
                  per_file: dict[str, dict] | None = None) -> str:  # fmt: skip
    """The uploader: files are sent one by one as request bodies (the browser streams them) to ``endpoint``."""
    config = {"endpoint": endpoint, "token": token, "settings": settings, "title": title, "tags": tags,
              "per_file": per_file or {}}  # fmt: skip
    # JSON inside a <script>: no "</" may appear, or a title could close the script
    payload = json.dumps(config).replace("</", "<\\/")
    return UPLOADER.replace("__ACCEPT__", html.escape(",".join(accept))).replace("__CONFIG__", payload)
