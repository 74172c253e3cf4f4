// utc-gateway agent console (SPEC 3): sign in (SSO one-time key or a pasted token),
// one authenticated WebSocket with automatic reconnect resuming from the last seq,
// popups with the disposition form, lead search and click-to-call, today's calls.
// Every value from the server is inserted as text, never as HTML.
"use strict";

const state = {
  token: localStorage.getItem("utc.token"),
  user: null,
  connectors: [],
  ws: null,
  lastSeq: null, // highest seq seen by this page; null on a fresh load
  seen: new Set(),
  popups: new Map(), // popup id -> { data, el, leadId }
  pending: new Map(), // req -> { resolve }
  retry: 0,
  reqNo: 0,
};

function setConn(kind) {
  const el = $("#conn");
  el.className = "conn " + kind;
  el.textContent = kind;
}

function leadName(lead) {
  if (!lead) return "Unknown caller";
  const name = [lead.first_name, lead.last_name].filter(Boolean).join(" ");
  return name || lead.phone || lead.mobile || "Unnamed lead";
}

function api(path, options = {}) {
  return request(state.token, path, options);
}

// ---------------------------------------------------------------- sign in

async function signInFromUrl() {
  const params = new URLSearchParams(location.search);
  const key = params.get("sso");
  if (!key) return;
  // the one-time key leaves the address bar before anything else happens
  params.delete("sso");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  const res = await fetch("/api/v1/sso/exchange", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ key }),
  });
  if (res.ok) {
    const session = await res.json();
    state.token = session.token;
    localStorage.setItem("utc.token", session.token);
  } else {
    $("#signin-error").textContent = "This sign-in link has expired or was already used.";
  }
}

function showSignIn() {
  $("#signin").hidden = false;
  $("#workspace").hidden = true;
  $("#signout").hidden = true;
  setConn("offline");
}

function signOut() {
  localStorage.removeItem("utc.token");
  state.token = null;
  if (state.ws) state.ws.close(1000);
  location.reload();
}

// ---------------------------------------------------------------- socket

function connect() {
  setConn(state.retry === 0 ? "offline" : "reconnecting");
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: state.token, since: state.lastSeq }));
  ws.onmessage = (ev) => {
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return;
    }
    onFrame(frame);
  };
  ws.onclose = (ev) => {
    state.ws = null;
    for (const [, p] of state.pending) p.resolve({ ok: false, error: { code: "disconnected", message: "Connection lost; try again." } });
    state.pending.clear();
    if (ev.code === 4401 || ev.code === 4403) {
      localStorage.removeItem("utc.token");
      state.token = null;
      $("#signin-error").textContent = ev.code === 4403 ? "This user is inactive." : "Please sign in again.";
      showSignIn();
      return;
    }
    setConn("reconnecting");
    const delay = Math.min(10000, 500 * 2 ** state.retry) * (0.8 + Math.random() * 0.4);
    state.retry += 1;
    setTimeout(connect, delay);
  };
}

function send(frame) {
  return new Promise((resolve) => {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      resolve({ ok: false, error: { code: "offline", message: "Not connected; try again in a moment." } });
      return;
    }
    const req = "r" + ++state.reqNo;
    state.pending.set(req, { resolve });
    state.ws.send(JSON.stringify({ ...frame, req }));
  });
}

function onFrame(f) {
  // ready carries the current seq (not an event of its own): only events are deduplicated
  if (f.seq != null && f.type !== "ready") {
    if (state.seen.has(f.seq)) return; // replayed and live frames may interleave
    state.seen.add(f.seq);
    state.lastSeq = Math.max(state.lastSeq || 0, f.seq);
  }
  switch (f.type) {
    case "ready":
      state.retry = 0;
      state.user = f.user;
      state.connectors = f.connectors || [];
      state.lastSeq = Math.max(state.lastSeq || 0, f.seq);
      setConn("connected");
      text($("#me"), f.user.name + " <" + f.user.email + ">");
      $("#signin").hidden = true;
      $("#workspace").hidden = false;
      $("#signout").hidden = false;
      fillVirtualNumbers();
      loadHistory();
      break;
    case "popup":
    case "popup_update":
      showPopup(f.popup, f.type === "popup");
      break;
    case "popup_closed":
      closePopup(f.popup_id);
      break;
    case "call_logged":
      callLogged(f.popup_id, f.activity);
      loadHistory();
      break;
    case "disposition_saved":
      loadHistory();
      break;
    case "result": {
      const p = state.pending.get(f.req);
      if (p) {
        state.pending.delete(f.req);
        p.resolve(f);
      }
      break;
    }
    default:
      break;
  }
}

// ---------------------------------------------------------------- popups

function showPopup(popup, fresh) {
  let entry = state.popups.get(popup.id);
  if (!entry) {
    const el = $("#popup-template").content.firstElementChild.cloneNode(true);
    el.dataset.popupId = popup.id;
    $("#popups").prepend(el);
    entry = { el, data: popup, leadId: popup.lead && popup.lead.id };
    state.popups.set(popup.id, entry);
    buildForm(entry, popup.disposition_form || {});
    if (fresh) alertAgent(popup);
  }
  entry.data = popup;
  entry.leadId = entry.leadId || (popup.lead && popup.lead.id);
  renderPopup(entry);
  $("#no-popups").hidden = state.popups.size > 0;
}

function renderPopup(entry) {
  const p = entry.data;
  const el = entry.el;
  const all = [p.lead, ...(p.candidates || [])].filter(Boolean);
  const lead = all.find((l) => l.id === entry.leadId) || p.lead;
  text($(".lead-name", el), leadName(lead));
  $(".new-lead", el).hidden = !p.new_lead;
  text($(".state", el), p.state);
  text($(".caller", el), p.call.lead_number);
  const via = [p.call.virtual_number, p.call.tag && "(" + p.call.tag + ")", p.call.connector_name && "· " + p.call.connector_name]
    .filter(Boolean)
    .join(" ");
  text($(".via", el), via);
  text($(".owner", el), lead && lead.owner && lead.owner.name);
  text($(".stage", el), lead && lead.stage);
  text($(".email", el), lead && lead.email);

  const box = $(".candidates", el);
  const buttons = $(".candidate-buttons", el);
  buttons.replaceChildren();
  box.hidden = all.length < 2;
  for (const l of all) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = l.id === (lead && lead.id) ? "" : "secondary";
    b.textContent = leadName(l);
    b.setAttribute("aria-pressed", String(l.id === (lead && lead.id)));
    b.onclick = () => {
      entry.leadId = l.id;
      renderPopup(entry);
    };
    buttons.append(b);
  }

  const link = $(".panel-link", el);
  const frame = $(".panel-frame", el);
  link.hidden = !p.agent_panel_url || p.use_external_url;
  frame.hidden = !p.agent_panel_url || !p.use_external_url;
  if (p.agent_panel_url) {
    link.href = p.agent_panel_url;
    if (p.use_external_url && frame.src !== p.agent_panel_url) frame.src = p.agent_panel_url;
  }

  const recent = $(".recent-list", el);
  recent.replaceChildren();
  for (const a of p.recent_calls || []) {
    const li = document.createElement("li");
    li.textContent = [a.kind === "inbound_call" ? "In" : "Out", a.status, a.started_at && when(a.started_at), a.duration_secs != null && a.duration_secs + " s"]
      .filter(Boolean)
      .join(" · ");
    recent.append(li);
  }
}

function buildForm(entry, form) {
  const el = entry.el;
  const f = $("form.dispose", el);
  const select = $("select[name=value]", f);
  const free = $("input[name=value-text]", f);
  if ((form.values || []).length) {
    select.append(new Option("Choose…", ""));
    for (const v of form.values) select.append(new Option(v, v));
  } else {
    select.hidden = true;
    select.required = false;
    free.hidden = false;
    free.required = true;
  }
  const section = (name, cfg) => {
    const fs = $("fieldset." + name, f);
    fs.hidden = !(cfg && cfg.enabled);
    $(".mandatory", fs).hidden = !(cfg && cfg.mandatory);
    return fs;
  };
  section("task", form.task);
  const act = section("activity", form.activity);
  const types = $("select[name=activity-type]", act);
  types.append(new Option("—", ""));
  for (const t of (form.activity && form.activity.types) || []) types.append(new Option(t, t));
  const fu = section("fields", form.field_update);
  for (const name of (form.field_update && form.field_update.fields) || []) {
    const label = document.createElement("label");
    label.textContent = name + " ";
    const input = document.createElement("input");
    input.type = "text";
    input.dataset.leadField = name;
    label.append(input);
    $(".field-inputs", fu).append(label);
  }
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    dispose(entry, form);
  });
}

async function dispose(entry, form) {
  const f = $("form.dispose", entry.el);
  for (const e of f.querySelectorAll(".error")) e.textContent = "";
  const value = (form.values || []).length ? $("select[name=value]", f).value : $("input[name=value-text]", f).value;
  const frame = { type: "dispose", popup_id: entry.data.id, lead_id: entry.leadId || null, value, notes: $("textarea[name=notes]", f).value || null, task: null, activity: null, fields: null };
  const subject = $("input[name=task-subject]", f).value;
  const due = $("input[name=task-due]", f).value;
  if (form.task && form.task.enabled && (subject || due)) frame.task = { subject, due_at: due ? new Date(due).toISOString() : "" };
  const type = $("select[name=activity-type]", f).value;
  const note = $("input[name=activity-note]", f).value;
  if (form.activity && form.activity.enabled && (type || note)) frame.activity = { type, note: note || null };
  const fields = {};
  for (const input of f.querySelectorAll("[data-lead-field]")) if (input.value) fields[input.dataset.leadField] = input.value;
  if (Object.keys(fields).length) frame.fields = fields;
  const button = $("button[type=submit]", f);
  button.disabled = true;
  const r = await send(frame);
  button.disabled = false;
  if (!r.ok) {
    const field = r.error.field || "";
    const slot = f.querySelector('[data-field="' + CSS.escape(field) + '"]') || f.querySelector('[data-field="' + CSS.escape(field.split(".")[0]) + '"]');
    (slot || $(".form-error", f)).textContent = r.error.message;
  }
}

function closePopup(id) {
  const entry = state.popups.get(id);
  if (!entry) return;
  entry.el.remove();
  state.popups.delete(id);
  $("#no-popups").hidden = state.popups.size > 0;
}

function callLogged(popupId, activity) {
  const entry = popupId && state.popups.get(popupId);
  if (!entry) return;
  const box = $(".logged", entry.el);
  box.hidden = false;
  box.replaceChildren();
  const line = document.createElement("p");
  line.className = "call-summary";
  line.textContent = "Call " + activity.status + " · " + (activity.duration_secs || 0) + " s";
  box.append(line);
  if (activity.recording_url && /^https?:\/\//.test(activity.recording_url)) {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "none";
    audio.src = activity.recording_url;
    const link = document.createElement("a");
    link.href = activity.recording_url;
    link.textContent = "Recording";
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    box.append(audio, link);
  }
}

// ---------------------------------------------------------------- alerts

function alertAgent(popup) {
  if (!document.hidden) return;
  if ("Notification" in window && Notification.permission === "granted") {
    new Notification("Incoming call", { body: leadName(popup.lead) + " · " + (popup.call.lead_number || "") });
  }
  try {
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    osc.frequency.value = 880;
    osc.connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.4);
  } catch {
    /* no audio */
  }
}

// ---------------------------------------------------------------- search, click-to-call, history

function fillVirtualNumbers() {
  const select = $("#vn");
  select.replaceChildren(new Option("Default number", ""));
  for (const c of state.connectors) {
    for (const vn of c.virtual_numbers || []) {
      select.append(new Option(vn.number + (vn.tag ? " (" + vn.tag + ")" : "") + " · " + c.name, vn.number));
    }
  }
}

async function search(ev) {
  ev.preventDefault();
  const q = $("#q").value.trim();
  const list = $("#results");
  list.replaceChildren();
  try {
    const page = await api("/api/v1/leads?q=" + encodeURIComponent(q));
    for (const lead of page.items) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = leadName(lead) + " · " + (lead.phone || lead.mobile || "no number");
      const call = document.createElement("button");
      call.type = "button";
      call.textContent = "Call";
      call.setAttribute("aria-label", "Call " + leadName(lead));
      call.onclick = () => clickToCall(lead);
      li.append(name, call);
      list.append(li);
    }
    if (!page.items.length) list.append(Object.assign(document.createElement("li"), { textContent: "No lead found." }));
  } catch (e) {
    list.append(Object.assign(document.createElement("li"), { textContent: e.message }));
  }
}

async function clickToCall(lead) {
  const out = $("#call-result");
  out.textContent = "Calling…";
  const r = await send({ type: "click_to_call", lead_id: lead.id, virtual_number: $("#vn").value || null, opportunity_id: null, number: null });
  out.textContent = r.ok ? "Call placed via " + (r.data.virtual_number || "the default number") + "." : "Call failed: " + r.error.message;
}

async function loadHistory() {
  const start = new Date();
  start.setHours(0, 0, 0, 0);
  try {
    const page = await api("/api/v1/me/activities?since=" + encodeURIComponent(start.toISOString()));
    const list = $("#history");
    list.replaceChildren();
    for (const a of page.items.filter((x) => x.kind === "inbound_call" || x.kind === "outbound_call" || x.kind === "disposition")) {
      const li = document.createElement("li");
      li.textContent = [new Date(a.created_at).toLocaleTimeString(), a.kind.replace("_", " "), a.status, a.duration_secs != null && a.duration_secs + " s"]
        .filter(Boolean)
        .join(" · ");
      list.append(li);
    }
  } catch {
    /* history is best effort */
  }
}

// ---------------------------------------------------------------- start

async function start() {
  $("#signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token").value.trim();
    localStorage.setItem("utc.token", state.token);
    $("#signin").hidden = true;
    connect();
  });
  $("#signout").onclick = signOut;
  $("#search-form").addEventListener("submit", search);
  if ("Notification" in window && Notification.permission === "default") {
    const b = $("#notify");
    b.hidden = false;
    b.onclick = () => Notification.requestPermission().then(() => (b.hidden = true));
  }
  await signInFromUrl();
  if (!state.token) return showSignIn();
  connect();
}

start();
