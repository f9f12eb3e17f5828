"""Small HTML components of the dashboard (no Streamlit state): the streamed uploader."""

from __future__ import annotations

import html
import json

UPLOADER = """
<div style="font-family: sans-serif; font-size: 14px;">
  <input id="files" type="file" multiple accept="__ACCEPT__" aria-label="Choose videos, photos and a metadata CSV">
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
      r.label.textContent = " " + file.name + (xhr.status !== 200 ? ": refused: " + (body.error || xhr.status)
                                               : body.duplicate ? ": " + body.message + "; nothing was changed"
                                               : ": uploaded ✓ (its processing is listed below)");
      if (xhr.status === 200 && !body.duplicate) setTimeout(() => r.bar.parentNode.remove(), 8000);
      resolve();
    };
    xhr.onerror = () => { r.label.textContent = " " + file.name + ": upload failed (is the dashboard running "
                                                + "with `ferpipe dashboard`?)"; resolve(); };
    xhr.send(file);
  });
}
async function metadata(file) {
  // a study metadata CSV among the files: the server reads it; its rows go with the files they name
  const r = row(file.name + ": reading the study metadata…");
  const res = await fetch(cfg.endpoint.replace(/upload$/, "metadata") + "?name=" + encodeURIComponent(file.name),
                          {method: "POST", body: file, headers: {"X-Ferpipe-Token": cfg.token}});
  let body = {};
  try { body = await res.json(); } catch (e) {}
  r.bar.value = 100;
  if (!res.ok) { r.label.textContent = " " + file.name + ": refused: " + (body.error || res.status); return false; }
  Object.assign(cfg.per_file, body.per_file || {});
  r.label.textContent = " " + file.name + ": " + body.rows + " metadata rows read" +
    (body.warnings && body.warnings.length ? "; " + body.warnings.join("; ") : "");
  return true;
}
document.getElementById("go").onclick = async () => {
  const files = Array.from(document.getElementById("files").files);
  if (!files.length) { row("Choose one or more files first."); return; }
  for (const f of files.filter((f) => f.name.toLowerCase().endsWith(".csv"))) { await metadata(f); }
  for (const f of files.filter((f) => !f.name.toLowerCase().endsWith(".csv"))) { await send(f); }
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


PANEL = """
<div id="panel" style="font-family: sans-serif; font-size: 16px; max-width: 860px; line-height: 1.45;">
  <section id="s-consent">
    <h2 style="margin-top: 0;">Before you start</h2>
    <p id="consent-text"></p>
    <label>Your respondent id <input id="respondent" type="text" maxlength="64" style="font-size: 16px;"></label>
    <p><label><input id="agree" type="checkbox"> I agree to be recorded for this study.</label></p>
    <button id="to-check" type="button" disabled>Next: camera check</button>
  </section>
  <section id="s-check" hidden>
    <h2 style="margin-top: 0;">Camera check</h2>
    <p>Allow the camera when your browser asks. Sit so that your face fills the middle of the picture, with light in
       front of you.</p>
    <video id="preview" autoplay muted playsinline style="width: 360px; background: #222; border-radius: 6px;"></video>
    <p id="check-face">Face in the picture: checking…</p>
    <p id="check-light">Light on your face: checking…</p>
    <p id="check-msg" style="color: #555;"></p>
    <button id="to-watch" type="button" disabled>Next: watch the video</button>
  </section>
  <section id="s-watch" hidden>
    <p id="watch-hint">Press Start, then watch the video to the end. Your webcam records while it plays.</p>
    <button id="start" type="button">Start</button>
    <video id="stimulus" playsinline preload="auto" style="width: 100%; max-height: 480px; background: #000;
           margin-top: 8px;"></video>
  </section>
  <section id="s-send" hidden>
    <h2 style="margin-top: 0;">Sending your recording…</h2>
    <progress id="send-bar" max="100" value="0" style="width: 320px;"></progress>
    <p id="send-msg"></p>
    <button id="retry" type="button" hidden>Try again</button>
  </section>
  <section id="s-thanks" hidden>
    <h2 style="margin-top: 0;">Thank you!</h2>
    <p>Your recording was received. You can close this page now.</p>
    <p id="thanks-ref" style="color: #555;"></p>
  </section>
  <p id="error" style="color: #b00020;"></p>
</div>
<script>
const cfg = __CONFIG__;
const $ = (id) => document.getElementById(id);
const show = (name) => { for (const s of document.querySelectorAll("#panel section")) s.hidden = (s.id !== "s-" + name); };
$("consent-text").textContent = cfg.consent;
$("respondent").value = cfg.respondent || "";
if (cfg.link) $("respondent").readOnly = true;  // a signed link names its respondent
const auth = cfg.link ? {"X-Ferpipe-Link": cfg.link} : {"X-Ferpipe-Token": cfg.token};
const ready = () => { $("to-check").disabled = !($("agree").checked && $("respondent").value.trim()); };
$("agree").onchange = ready; $("respondent").oninput = ready; ready();
let stream = null, checking = null, recorder = null, chunks = [], offset = 0, blob = null;
$("to-check").onclick = async () => {
  show("check");
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 1280}, height: {ideal: 720}}, audio: false});
  } catch (e) {
    $("error").textContent = "The camera could not be opened (" + e.name + "). Allow camera access for this page and reload.";
    return;
  }
  $("preview").srcObject = stream;
  const canvas = document.createElement("canvas");
  let good = 0;
  checking = setInterval(async () => {
    const v = $("preview");
    if (!v.videoWidth) return;
    canvas.width = 480; canvas.height = Math.round(480 * v.videoHeight / v.videoWidth);
    canvas.getContext("2d").drawImage(v, 0, 0, canvas.width, canvas.height);
    const shot = await new Promise((r) => canvas.toBlob(r, "image/jpeg", 0.85));
    try {
      const res = await fetch(cfg.check, {method: "POST", body: shot, headers: auth});
      const c = await res.json();
      if (c.error) { $("check-msg").textContent = c.error; return; }
      $("check-face").textContent = "Face in the picture: " + (c.face_ok ? "✓" : "✗ (" + c.faces + " found)");
      $("check-light").textContent = "Light on your face: " + (c.light_ok ? "✓" : "✗");
      $("check-msg").textContent = c.message;
      good = (c.face_ok && c.light_ok) ? good + 1 : 0;
      $("to-watch").disabled = good < 2;  // two checks in a row
    } catch (e) { $("check-msg").textContent = "Checking failed: " + e; }
  }, 1000);
};
$("to-watch").onclick = () => { clearInterval(checking); show("watch"); $("stimulus").src = cfg.stimulus; };
$("start").onclick = () => {
  $("start").hidden = true; $("watch-hint").textContent = "Recording. Please watch until the end.";
  const types = ["video/webm;codecs=vp8", "video/webm;codecs=vp9", "video/webm", "video/mp4"];
  const type = types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || "";
  recorder = new MediaRecorder(stream, type ? {mimeType: type, videoBitsPerSecond: 2500000} : {});
  chunks = [];
  recorder.ondataavailable = (e) => { if (e.data && e.data.size) chunks.push(e.data); };
  recorder.onstop = () => { blob = new Blob(chunks, {type: recorder.mimeType || "video/webm"}); send(); };
  let t0 = null;
  recorder.onstart = () => { t0 = performance.now(); };
  const stim = $("stimulus");
  stim.onplaying = () => { if (t0 !== null && !offset) offset = (performance.now() - t0) / 1000; };
  stim.onended = () => { recorder.stop(); stream.getTracks().forEach((t) => t.stop()); };
  stim.onerror = () => { $("error").textContent = "The video could not be played. Please tell the researcher."; };
  recorder.start(1000);
  stim.play().catch((e) => { $("error").textContent = "The video could not start (" + e.name + ")."; });
};
function send() {
  show("send");
  $("retry").hidden = true;
  const who = $("respondent").value.trim();
  const ext = (blob.type || "").includes("mp4") ? "mp4" : "webm";
  const params = new URLSearchParams({name: "panel-" + who.replace(/[^A-Za-z0-9_-]/g, "_") + "." + ext,
    title: cfg.title_prefix + who, respondent: who, stimulus: cfg.stimulus_id, offset_s: offset.toFixed(3),
    settings: JSON.stringify(cfg.settings || {}), tags_json: JSON.stringify(cfg.tags || {})});
  const xhr = new XMLHttpRequest();
  xhr.open("POST", cfg.upload + "?" + params.toString());
  for (const [k, v] of Object.entries(auth)) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) $("send-bar").value = 100 * e.loaded / e.total; };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) {}
    if (xhr.status === 200) { $("thanks-ref").textContent = "Reference: " + body.job_id; show("thanks"); }
    else { $("send-msg").textContent = "Sending failed: " + (body.error || xhr.status); $("retry").hidden = false; }
  };
  xhr.onerror = () => { $("send-msg").textContent = "Sending failed (network). Please try again."; $("retry").hidden = false; };
  xhr.send(blob);
}
$("retry").onclick = send;
</script>
"""


def panel_html(config: dict) -> str:
    """The respondent's side of a webcam panel: consent, camera check, the stimulus while recording, upload,
    thanks. ``config``: consent, respondent, link (a respondent's signed link: the server decides everything else
    about the upload) or token, check, upload, stimulus (URL), stimulus_id, title_prefix."""
    payload = json.dumps(config).replace("</", "<\\/")
    return PANEL.replace("__CONFIG__", payload)
