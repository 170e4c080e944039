// The review page: everything from the API is put in the page as text (textContent), never as markup, and the
// page's own links and picture addresses are built here from encoded parts. No inline script: the CSP forbids it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { before: [], next: null };  // the paging trail: each page's before_id, and the next one's

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function link(href, text) {
  const a = el("a", text);
  a.href = href;
  return a;
}

function mediaSrc(url) {  // only the API's own media addresses
  return typeof url === "string" && url.startsWith("/api/media/") ? url : null;
}

function when(t) {
  return t === null || t === undefined ? "" : new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function num(x, digits) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function count(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function say(text, ok) {
  const m = $("message");
  m.textContent = text || "";
  m.className = ok ? "ok" : "error";
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function personHref(name) {
  return "#/person/" + encodeURIComponent(name);
}

function who(s) {
  const span = el("span");
  if (s.identity) span.append(link(personHref(s.identity), s.identity));
  if (s.unknown_id) {
    if (s.identity) span.append(" ");
    span.append(link(personHref(s.unknown_id), s.identity ? "(" + s.unknown_id + ")" : s.unknown_id));
  }
  if (!s.identity && !s.unknown_id) span.textContent = "–";
  return span;
}

function sightingRow(s, withCrop) {
  const tr = el("tr");
  tr.dataset.id = String(s.id);
  tr.append(el("td", when(s.first_wall)), el("td", s.camera));
  const third = el("td");
  if (withCrop) {
    const src = mediaSrc(s.crop);
    if (src) { const img = el("img"); img.src = src; img.alt = "crop"; third.append(img); }
  } else third.append(who(s));
  const decision = el("td");
  decision.append(el("span", s.status.replace("_", " "), "badge " + s.status));
  tr.append(third, decision, el("td", num(s.distance, 3)));
  const open = el("td");
  open.append(link("#/sighting/" + s.id, "open"));
  tr.append(open);
  return tr;
}

async function loadCameras() {
  const data = await api("/api/cameras");
  const list = $("camera-list"), select = $("f-camera");
  list.replaceChildren();
  const chosen = select.value;
  select.replaceChildren(el("option", "any"));
  select.firstChild.value = "";
  for (const c of data.cameras) {
    const li = el("li");
    li.append(el("strong", c.name), " ", el("span", c.state, "state " + c.state),
      el("div", `${c.frames_analysed} frames analysed, ${c.frames_dropped} dropped, ` +
        count(c.sightings, "sighting")));
    list.append(li);
    const opt = el("option", c.name);
    opt.value = c.name;
    select.append(opt);
  }
  select.value = chosen;
}

function filterQuery(before) {
  const q = new URLSearchParams();
  for (const id of ["camera", "person", "status"]) {
    const v = $("f-" + id).value.trim();
    if (v) q.set(id, v);
  }
  for (const id of ["since", "until"]) {
    const v = $("f-" + id).value;  // local time in the browser, sent as unix seconds
    if (v) q.set(id, String(Math.floor(new Date(v).getTime() / 1000)));
  }
  q.set("limit", "50");
  if (before) q.set("before_id", String(before));
  return q;
}

async function loadTimeline(before) {
  const data = await api("/api/sightings?" + filterQuery(before));
  const rows = $("timeline-rows");
  rows.replaceChildren(...data.sightings.map((s) => sightingRow(s, false)));
  if (!data.sightings.length) {
    const tr = el("tr");
    tr.append(el("td", "no sightings"));
    rows.append(tr);
  }
  state.next = data.next_before_id;
  $("older").disabled = state.next === null;
  $("newest").disabled = !before;
}

function field(dl, name, value) {
  if (value === null || value === undefined || value === "") return;
  dl.append(el("dt", name));
  const dd = el("dd");
  if (value instanceof Node) dd.append(value); else dd.textContent = String(value);
  dl.append(dd);
}

function showPicture(img, url) {
  const src = mediaSrc(url);
  img.hidden = !src;
  if (src) img.src = src; else img.removeAttribute("src");
}

function distanceText(s) {
  if (s.distance === null) return null;
  if (s.threshold === null) return num(s.distance, 3);
  const side = s.distance <= s.threshold ? "within" : "over";
  return `${num(s.distance, 3)} (${side} the threshold ${num(s.threshold, 3)})`;
}

function fillSighting(s) {
  $("s-title").textContent = `Sighting ${s.id}: ${s.camera}, track ${s.track}`;
  showPicture($("s-crop"), s.crop);
  showPicture($("s-gei"), s.gei);
  const clip = mediaSrc(s.clip), video = $("s-clip");
  video.hidden = !clip;
  $("s-noclip").hidden = !!clip;
  if (clip) video.src = clip; else video.removeAttribute("src");
  const dl = $("s-fields");
  dl.replaceChildren();
  field(dl, "Camera", s.camera);
  field(dl, "Seen (UTC)", `${when(s.first_wall)} to ${when(s.last_wall)}`);
  field(dl, "Frames", `${s.first_frame} to ${s.last_frame}, ${s.n_silhouettes} silhouettes`);
  field(dl, "Decision", s.status.replace("_", " ") + (s.reason ? ` (${s.reason.replace(/_/g, " ")})` : ""));
  field(dl, "Who", who(s));
  field(dl, "Distance", distanceText(s));
  if (s.lr !== null) field(dl, "Likelihood ratio", `${Number(s.lr).toPrecision(3)} (${s.verbal})`);
  $("s-runners").replaceChildren(...s.runners_up.map((r) => {
    const li = el("li");
    li.append(link(personHref(r.name), r.name), " " + num(r.distance, 3));
    return li;
  }));
  if (!s.runners_up.length) $("s-runners").append(el("li", "none"));
}

async function showSighting(id) {
  const s = await api("/api/sightings/" + encodeURIComponent(id));
  fillSighting(s);
  const form = $("enrol");
  form.hidden = !(s.status === "unknown" && !s.identity && s.embedding);
  form.dataset.id = String(s.id);
  form.dataset.unknown = s.unknown_id || "";
  $("e-all").disabled = !s.unknown_id;
  $("e-all-label").textContent = s.unknown_id ? `all sightings of ${s.unknown_id}` : "no unknown id";
}

async function showPerson(name) {
  const data = await api("/api/people/" + encodeURIComponent(name));
  $("p-title").textContent = data.person;
  const cams = new Set(data.sightings.map((s) => s.camera));
  $("p-summary").textContent = `${count(data.sightings.length, "sighting")} on ${count(cams.size, "camera")}` +
    (data.in_gallery ? ", in the gallery" : data.kind === "named" ? ", not in the gallery now" : ", not named yet");
  $("p-actions").hidden = !data.in_gallery;
  $("p-actions").dataset.name = data.person;
  $("p-rows").replaceChildren(...data.sightings.map((s) => sightingRow(s, true)));
}

function personItem(href, name, detail) {
  const li = el("li");
  li.append(link(href, name), " " + detail);
  return li;
}

async function showPeople() {
  const data = await api("/api/people");
  $("people-named").replaceChildren(...data.named.map((p) => personItem(personHref(p.name), p.name,
    count(p.sightings, "sighting") +
    (p.in_gallery ? `, ${count(p.tracks, "gallery track")}` : ", not in the gallery"))));
  $("people-unknown").replaceChildren(...data.unknown.map((p) => personItem(personHref(p.id), p.id,
    `${count(p.sightings, "sighting")}, last ${when(p.last_seen)}`)));
}

function showView(name) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
}

async function route() {
  try {
    const [, kind, arg] = decodeURIComponent(location.hash).match(/^#\/([a-z]*)\/?(.*)$/s) || [];
    if (kind === "sighting") { await showSighting(arg); showView("sighting"); }
    else if (kind === "person") { await showPerson(arg); showView("person"); }
    else if (kind === "people") { await showPeople(); showView("people"); }
    else { await loadTimeline(state.before[state.before.length - 1]); showView("timeline"); }
    document.body.dataset.ready = (kind || "timeline") + ":" + (arg || "");
  } catch (e) {
    say(e.message);
  }
}

async function submitEnrol(ev) {
  ev.preventDefault();
  const form = $("enrol"), name = $("e-name").value.trim();
  const all = form.querySelector("input[name=scope]:checked").value === "unknown";
  const body = all ? { unknown_id: form.dataset.unknown, name } : { sighting_id: Number(form.dataset.id), name };
  try {
    const done = await api("/api/enrol", body);
    say(`Enrolled ${done.name}: ${count(done.enrolled.length, "sighting")} joined the gallery, ` +
      `${count(done.sightings_named, "sighting")} named.`, true);
    location.hash = personHref(done.name);
  } catch (e) { say(e.message); }
}

async function submitRename(ev) {
  ev.preventDefault();
  const old = $("p-actions").dataset.name, name = $("r-new").value.trim();
  try {
    await api("/api/people/" + encodeURIComponent(old) + "/rename", { new: name });
    say(`Renamed ${old} to ${name} in the gallery (past sightings keep the name they were decided with).`, true);
    location.hash = personHref(name);
  } catch (e) { say(e.message); }
}

async function submitRemove(ev) {
  ev.preventDefault();
  const name = $("p-actions").dataset.name;
  if (!window.confirm(`Remove ${name} and their features from the gallery?`)) return;
  try {
    await api("/api/people/" + encodeURIComponent(name) + "/remove", {});
    say(`Removed ${name} from the gallery.`, true);
    location.hash = "#/people";
  } catch (e) { say(e.message); }
}

function wire() {
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); state.before = []; say(""); route(); });
  $("older").addEventListener("click", () => { state.before.push(state.next); loadTimeline(state.next); });
  $("newest").addEventListener("click", () => { state.before = []; loadTimeline(undefined); });
  $("enrol").addEventListener("submit", submitEnrol);
  $("rename").addEventListener("submit", submitRename);
  $("remove").addEventListener("submit", submitRemove);
  window.addEventListener("hashchange", route);
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  loadCameras().catch((e) => say(e.message));
  setInterval(() => loadCameras().catch(() => {}), 5000);
  route();
});
