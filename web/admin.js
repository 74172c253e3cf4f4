// utc-gateway admin page (SPEC 6 and 9): admin-token sign-in; connectors as tabs (add,
// clone, delete, make default, rotate keys, copy provider URLs, virtual numbers with
// tags, teams, settings with the server's validation messages); users and teams; the
// telephony-log viewer; the outbox with retry. Every server value is inserted as text.
"use strict";

const admin = {
  token: sessionStorage.getItem("utc.admin"),
  connectors: [], // oldest first
  teams: [],
  users: [],
  current: null, // selected connector id
  secrets: new Map(), // connector id -> secret key, shown once after create/clone/rotate
  logCursor: null,
  logTurn: 0, // the latest telephony-log request; older answers are dropped
  outboxCursor: null,
  outboxTurn: 0,
};

const api = (path, options) => request(admin.token, path, options);
const send = (method, body) => ({ method, body: body === undefined ? undefined : JSON.stringify(body) });
const LIMIT = 500;

// ---------------------------------------------------------------- feedback

let flashTimer = null;
function flash(message, bad = false) {
  const el = $("#flash");
  el.textContent = message;
  el.className = "flash " + (bad ? "bad" : "ok");
  el.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => (el.hidden = true), 6000);
}

function clearErrors(form) {
  for (const p of form.querySelectorAll("[data-error]")) p.textContent = "";
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
}

/** Shows an API error next to the field it names (the longest matching `data-error`). */
function showError(form, err) {
  const e = (err.body && err.body.error) || { message: err.message, field: null };
  const field = e.field || "";
  let target = null;
  for (const p of form.querySelectorAll("[data-error]")) {
    const f = p.dataset.error;
    const matches = f === "" || field === f || field.startsWith(f + ".") || field.startsWith(f + "[");
    if (matches && (!target || f.length > target.dataset.error.length)) target = p;
  }
  const message = target && target.dataset.error === "" && field ? `${field}: ${e.message}` : e.message;
  if (target) {
    target.textContent = message;
    target.setAttribute("role", "alert");
  } else {
    flash(message, true);
  }
  const input = field && form.querySelector(`[name="${CSS.escape(field)}"]`);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

/** Runs `fn`, reporting a failure in `form` (or as a flash message). */
async function attempt(form, fn) {
  if (form) clearErrors(form);
  try {
    return await fn();
  } catch (err) {
    if (err.status === 401) return signOut("Your admin token was refused. Sign in again.");
    if (form) showError(form, err);
    else flash(err.message, true);
    return undefined;
  }
}

async function copy(value) {
  try {
    await navigator.clipboard.writeText(value);
  } catch {
    const t = h("textarea", { class: "sr-only" }, value);
    document.body.append(t);
    t.select();
    document.execCommand("copy");
    t.remove();
  }
  flash("Copied to the clipboard.");
}

// ---------------------------------------------------------------- tabs

/** Arrow keys move between the tabs of a tablist (WAI-ARIA tabs pattern). */
function arrowKeys(list) {
  list.addEventListener("keydown", (ev) => {
    const tabs = [...list.querySelectorAll("[role=tab]")];
    const i = tabs.indexOf(document.activeElement);
    if (i < 0) return;
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    const tab = tabs[(next + tabs.length) % tabs.length];
    tab.focus();
    tab.click();
  });
}

function selectTab(list, selected) {
  for (const tab of list.querySelectorAll("[role=tab]")) {
    const on = tab === selected;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
  }
}

const loaders = { connectors: loadConnectors, people: loadPeople, logs: () => loadLogs(true), outbox: () => loadOutbox(true) };

function showPanel(name) {
  if (!loaders[name]) name = "connectors";
  selectTab($("#sections"), $(`#tab-${name}`));
  for (const p of Object.keys(loaders)) $(`#panel-${p}`).hidden = p !== name;
  if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
  loaders[name]();
}

// ---------------------------------------------------------------- sign in

function signOut(message) {
  admin.token = null;
  sessionStorage.removeItem("utc.admin");
  $("#signin").hidden = false;
  $("#sections").hidden = true;
  $("#signout").hidden = true;
  for (const p of Object.keys(loaders)) $(`#panel-${p}`).hidden = true;
  $("#signin-error").textContent = message || "";
  $("#admin-token").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const token = $("#admin-token").value.trim();
  try {
    await request(token, "/api/v1/teams?limit=1");
  } catch (err) {
    $("#signin-error").textContent = err.status === 401 ? "This token is not the admin token." : err.message;
    return;
  }
  admin.token = token;
  sessionStorage.setItem("utc.admin", token);
  $("#admin-token").value = "";
  start();
}

function start() {
  $("#signin").hidden = true;
  $("#sections").hidden = false;
  $("#signout").hidden = false;
  showPanel(location.hash.slice(1));
}

// ---------------------------------------------------------------- connectors

async function fetchAll(path) {
  const page = await api(`${path}${path.includes("?") ? "&" : "?"}limit=${LIMIT}`);
  return page.items;
}

async function loadTeams() {
  admin.teams = (await fetchAll("/api/v1/teams")).reverse();
}

async function loadConnectors() {
  await attempt(null, async () => {
    const [connectors] = await Promise.all([fetchAll("/api/v1/connectors"), loadTeams()]);
    admin.connectors = connectors.reverse();
    if (!admin.connectors.some((c) => c.id === admin.current)) {
      admin.current = (admin.connectors.find((c) => c.is_default) || admin.connectors[0] || {}).id || null;
    }
    renderConnectorTabs();
    await renderConnector();
  });
}

function connectorName(id) {
  const c = admin.connectors.find((x) => x.id === id);
  return c ? c.name : id ? id.slice(0, 8) + "…" : "—";
}

function renderConnectorTabs() {
  const list = $("#connector-tabs");
  list.replaceChildren(
    ...admin.connectors.map((c) => {
      const tab = h(
        "button",
        { type: "button", role: "tab", "aria-controls": "connector", dataset: { id: c.id }, onclick: () => selectConnector(c.id) },
        c.name,
        c.is_default ? h("span", { class: "badge ok" }, "default") : null,
      );
      return tab;
    }),
  );
  selectTab(list, list.querySelector(`[data-id="${admin.current}"]`));
  $("#no-connectors").hidden = admin.connectors.length > 0;
  $("#connector").hidden = !admin.current;
}

async function selectConnector(id) {
  admin.current = id;
  selectTab($("#connector-tabs"), $(`#connector-tabs [data-id="${id}"]`));
  await attempt(null, renderConnector);
}

function current() {
  return admin.connectors.find((c) => c.id === admin.current);
}

async function renderConnector() {
  const c = current();
  $("#connector").hidden = !c;
  if (!c) return;
  $("#connector").setAttribute("aria-label", "Connector " + c.name);
  text($("#connector-name"), c.name);
  text($("#connector-kind"), c.kind === "super_receptionist_v2" ? "Super Receptionist V2" : "Generic");
  $("#connector-default").hidden = !c.is_default;
  $('[data-action="default"]').disabled = c.is_default;
  text($("#access-key"), c.access_key);
  const secret = admin.secrets.get(c.id);
  $("#secret-once").hidden = !secret;
  text($("#secret-key"), secret);
  fillSettings(c);
  clearErrors($("#settings"));
  renderConnectorTeams(c);
  const [urls, numbers] = await Promise.all([api(`/api/v1/connectors/${c.id}/urls`), fetchAll(`/api/v1/connectors/${c.id}/virtual-numbers`)]);
  renderUrls(urls);
  renderNumbers(c, numbers);
}

const URL_NAMES = { agent_popup: "Agent popup", call_log: "Call log", call_route: "Call route", sso: "Single sign-on" };

function renderUrls(u) {
  const rows = Object.entries(URL_NAMES).map(([key, label]) =>
    h(
      "li",
      {},
      h("span", { class: "url-name" }, label),
      h("code", { class: "wrap-anywhere" }, u.urls[key]),
      h("button", { type: "button", class: "secondary small", "aria-label": `Copy the ${label} URL`, onclick: () => copy(u.urls[key]) }, "Copy"),
      h("button", { type: "button", class: "secondary small", "aria-label": `Copy the ${label} URL with keys`, onclick: () => copy(u.urls_with_keys[key]) }, "Copy with keys"),
    ),
  );
  const headers = Object.keys(u.headers).join(" and ");
  rows.push(h("li", { class: "muted" }, `Providers that cannot put keys in the URL send the headers ${headers}.`));
  $("#urls").replaceChildren(...rows);
}

function renderNumbers(c, numbers) {
  const rows = numbers.map((vn) => {
    const tag = h("input", { value: vn.tag || "", "aria-label": `Tag of ${vn.number}`, autocomplete: "off" });
    const save = async () => {
      const ok = await attempt(null, () => api(`/api/v1/connectors/${c.id}/virtual-numbers/${vn.id}`, send("PATCH", { tag: tag.value.trim() || null })));
      if (ok) flash(`Tag of ${vn.number} saved.`);
    };
    const remove = async () => {
      if (!confirm(`Remove ${vn.number} from ${c.name}?`)) return;
      const ok = await attempt(null, () => api(`/api/v1/connectors/${c.id}/virtual-numbers/${vn.id}`, send("DELETE")));
      if (ok !== undefined) renderConnector();
    };
    return h(
      "tr",
      { dataset: { number: vn.number } },
      h("td", {}, h("code", {}, vn.number)),
      h("td", {}, tag),
      h("td", { class: "actions" }, h("button", { type: "button", class: "secondary small", onclick: save }, "Save tag"), h("button", { type: "button", class: "danger small", onclick: remove }, "Remove")),
    );
  });
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No virtual number yet.")));
  $("#vn-rows").replaceChildren(...rows);
}

async function addNumber(ev) {
  ev.preventDefault();
  const form = ev.target;
  const c = current();
  const body = { number: form.number.value.trim(), tag: form.tag.value.trim() || null };
  const vn = await attempt(form, () => api(`/api/v1/connectors/${c.id}/virtual-numbers`, send("POST", body)));
  if (!vn) return;
  form.reset();
  flash(`${vn.number} added to ${c.name}.`);
  await attempt(null, renderConnector);
  form.number.focus();
}

function renderConnectorTeams(c) {
  const boxes = admin.teams.map((t) =>
    h("label", { class: "check" }, h("input", { type: "checkbox", value: t.id, checked: t.connector_ids.includes(c.id) }), t.name),
  );
  if (!boxes.length) boxes.push(h("p", { class: "muted" }, "No team yet: add teams under Users and teams."));
  $("#connector-teams").replaceChildren($("#connector-teams legend"), ...boxes);
  $("#save-teams").disabled = admin.teams.length === 0;
}

async function saveTeams() {
  const c = current();
  const team_ids = [...$("#connector-teams").querySelectorAll("input:checked")].map((i) => i.value);
  const ok = await attempt(null, () => api(`/api/v1/connectors/${c.id}/teams`, send("PUT", { team_ids })));
  if (!ok) return;
  await loadTeams();
  renderConnectorTeams(c);
  flash(`Teams of ${c.name} saved.`);
}

async function addConnector(ev) {
  ev.preventDefault();
  const form = ev.target;
  const c = await attempt(form, () => api("/api/v1/connectors", send("POST", { name: form.name.value.trim(), kind: form.kind.value })));
  if (!c) return;
  form.reset();
  form.hidden = true;
  admin.secrets.set(c.id, c.secret_key);
  admin.current = c.id;
  flash(`Connector ${c.name} created. Copy its secret key now.`);
  await loadConnectors();
}

const actions = {
  async default(c) {
    const d = await attempt(null, () => api(`/api/v1/connectors/${c.id}/default`, send("POST")));
    if (d) flash(`${d.name} is now the default connector.`);
  },
  async clone(c) {
    const name = prompt("Name of the copy", c.name + " (copy)");
    if (name === null) return;
    const d = await attempt(null, () => api(`/api/v1/connectors/${c.id}/clone`, send("POST", { name: name.trim() || null })));
    if (!d) return;
    admin.secrets.set(d.id, d.secret_key);
    admin.current = d.id;
    flash(`${d.name} created from ${c.name}: same settings and teams, new keys, no numbers.`);
  },
  async rotate(c) {
    if (!confirm(`Give ${c.name} new keys? The provider must be updated, the old keys stop working now.`)) return;
    const d = await attempt(null, () => api(`/api/v1/connectors/${c.id}/rotate-keys`, send("POST")));
    if (!d) return;
    admin.secrets.set(d.id, d.secret_key);
    flash(`New keys for ${d.name}. Copy the secret key now.`);
  },
  async delete(c) {
    if (!confirm(`Delete ${c.name}? Its keys stop working and its numbers are released.`)) return;
    const ok = await attempt(null, () => api(`/api/v1/connectors/${c.id}`, send("DELETE")));
    if (ok === undefined) return;
    admin.secrets.delete(c.id);
    admin.current = null;
    flash(`${c.name} deleted.`);
  },
};

// ---------------------------------------------------------------- settings form

const NULLABLE = new Set([
  "default_country",
  "lead_source",
  "popup.agent_panel_url",
  "disposition.forward.body",
  "click_to_call.body",
  "click_to_call.response_keyword",
]);
const OPTIONAL_DEFAULTS = {
  "disposition.forward": { method: "POST", body_format: "json", timeout_ms: 5000 },
  click_to_call: { method: "GET", body_format: "json", timeout_ms: 5000 },
};

function getPath(obj, path) {
  return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

function setPath(obj, path, value) {
  const keys = path.split(".");
  const last = keys.pop();
  let o = obj;
  for (const k of keys) o = o[k] == null ? (o[k] = {}) : o[k];
  o[last] = value;
}

function showOptional(toggle) {
  const box = toggle.closest("[data-optional]");
  for (const el of box.querySelectorAll("input, select, textarea")) if (el !== toggle) el.disabled = !toggle.checked;
}

function fillSettings(c) {
  const form = $("#settings");
  for (const toggle of form.querySelectorAll("[data-toggle]")) {
    toggle.checked = getPath(c, toggle.dataset.toggle) != null;
  }
  for (const input of form.querySelectorAll("[name]")) {
    let v = getPath(c, input.name);
    const optional = Object.keys(OPTIONAL_DEFAULTS).find((p) => input.name.startsWith(p + "."));
    if (v === undefined && optional) v = OPTIONAL_DEFAULTS[optional][input.name.slice(optional.length + 1)];
    if (input.type === "checkbox") input.checked = Boolean(v);
    else if (input.dataset.kind === "lines") input.value = (v || []).join("\n");
    else if (input.dataset.kind === "json") input.value = v && Object.keys(v).length ? JSON.stringify(v, null, 2) : "";
    else input.value = v == null ? "" : String(v);
  }
  for (const toggle of form.querySelectorAll("[data-toggle]")) showOptional(toggle);
}

function fieldError(field, message) {
  const err = new Error(message);
  err.body = { error: { code: "validation_failed", message, field } };
  return err;
}

/** The settings as the form shows them (the shape of `POST /api/v1/connectors`). */
function collectSettings(form) {
  const out = {};
  const off = [...form.querySelectorAll("[data-toggle]")].filter((t) => !t.checked).map((t) => t.dataset.toggle);
  for (const path of off) setPath(out, path, null);
  for (const input of form.querySelectorAll("[name]")) {
    const name = input.name;
    if (off.some((p) => name.startsWith(p + "."))) continue;
    const raw = input.value.trim();
    let v;
    if (input.type === "checkbox") v = input.checked;
    else if (input.dataset.kind === "lines") v = input.value.split("\n").map((s) => s.trim()).filter(Boolean);
    else if (input.dataset.kind === "number") {
      if (raw === "") continue;
      v = Number(raw);
      if (!Number.isInteger(v) || v < 1) throw fieldError(name, "must be a whole number above 0");
    } else if (input.dataset.kind === "json") {
      try {
        v = raw ? JSON.parse(raw) : {};
      } catch {
        throw fieldError(name, 'must be a JSON object, e.g. {"Authorization": "Bearer …"}');
      }
      if (v === null || typeof v !== "object" || Array.isArray(v)) throw fieldError(name, "must be a JSON object");
    } else v = raw === "" && NULLABLE.has(name) ? null : raw;
    setPath(out, name, v);
  }
  return out;
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** The RFC 7396 merge patch turning `before` into `after` (over `after`'s keys; maps such
 * as `headers` also lose the keys `after` no longer has). */
function mergePatch(before, after, isMap = false) {
  const patch = {};
  if (isMap) for (const k of Object.keys(before)) if (!(k in after)) patch[k] = null;
  for (const [k, v] of Object.entries(after)) {
    const b = before ? before[k] : undefined;
    if (isObject(v) && isObject(b)) {
      const p = mergePatch(b, v, k === "headers");
      if (Object.keys(p).length) patch[k] = p;
    } else if (JSON.stringify(v) !== JSON.stringify(b)) patch[k] = v;
  }
  return patch;
}

async function saveSettings(ev) {
  ev.preventDefault();
  const form = ev.target;
  const c = current();
  const saved = await attempt(form, async () => {
    const patch = mergePatch(c, collectSettings(form));
    if (!Object.keys(patch).length) return c;
    return api(`/api/v1/connectors/${c.id}`, send("PATCH", patch));
  });
  if (!saved) return;
  Object.assign(c, saved);
  renderConnectorTabs();
  fillSettings(c);
  text($("#connector-name"), c.name);
  flash(`Settings of ${c.name} saved.`);
}

// ---------------------------------------------------------------- users and teams

async function loadPeople() {
  await attempt(null, async () => {
    const [users] = await Promise.all([fetchAll("/api/v1/users"), loadTeams()]);
    admin.users = users.reverse();
    renderTeams();
    renderUsers();
  });
}

function renderTeams() {
  const rows = admin.teams.map((t) => {
    const rename = async () => {
      const name = prompt("New name of the team", t.name);
      if (!name) return;
      const ok = await attempt(null, () => api(`/api/v1/teams/${t.id}`, send("PATCH", { name })));
      if (ok) loadPeople();
    };
    const remove = async () => {
      if (!confirm(`Delete the team ${t.name}? Its members and connectors are unassigned.`)) return;
      const ok = await attempt(null, () => api(`/api/v1/teams/${t.id}`, send("DELETE")));
      if (ok !== undefined) loadPeople();
    };
    return h(
      "li",
      { dataset: { team: t.name } },
      h("strong", {}, t.name),
      h("span", { class: "muted" }, `${t.user_ids.length} members · connectors: ${t.connector_ids.map(connectorName).join(", ") || "none"}`),
      h("span", { class: "spacer" }),
      h("button", { type: "button", class: "secondary small", onclick: rename, "aria-label": `Rename ${t.name}` }, "Rename"),
      h("button", { type: "button", class: "danger small", onclick: remove, "aria-label": `Delete ${t.name}` }, "Delete"),
    );
  });
  if (!rows.length) rows.push(h("li", { class: "muted" }, "No team yet."));
  $("#team-rows").replaceChildren(...rows);
  $("#user-teams").replaceChildren(
    $("#user-teams legend"),
    ...admin.teams.map((t) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "team_ids", value: t.id }), t.name)),
  );
}

function renderUsers() {
  const teamName = (id) => (admin.teams.find((t) => t.id === id) || { name: "?" }).name;
  const rows = admin.users.map((u) => {
    const token = async () => {
      const t = await attempt(null, () => api(`/api/v1/users/${u.id}/tokens`, send("POST")));
      if (!t) return;
      text($("#token-user"), u.name);
      text($("#token-value"), t.token);
      $("#token-out").hidden = false;
    };
    const toggle = async () => {
      const ok = await attempt(null, () => api(`/api/v1/users/${u.id}`, send("PATCH", { active: !u.active })));
      if (ok) loadPeople();
    };
    return h(
      "tr",
      { dataset: { email: u.email } },
      h("td", {}, u.name),
      h("td", {}, u.email),
      h("td", {}, (u.phone_numbers || []).join(", ") || "—"),
      h("td", {}, (u.team_ids || []).map(teamName).join(", ") || "—"),
      h("td", {}, u.role),
      h("td", {}, h("span", { class: "badge " + (u.active ? "ok" : "bad") }, u.active ? "active" : "inactive")),
      h(
        "td",
        { class: "actions" },
        h("button", { type: "button", class: "secondary small", onclick: token, "aria-label": `Issue a token for ${u.name}` }, "Issue token"),
        h("button", { type: "button", class: "secondary small", onclick: toggle }, u.active ? "Deactivate" : "Activate"),
      ),
    );
  });
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No user yet.")));
  $("#user-rows").replaceChildren(...rows);
}

async function addTeam(ev) {
  ev.preventDefault();
  const form = ev.target;
  const t = await attempt(form, () => api("/api/v1/teams", send("POST", { name: form.name.value.trim() })));
  if (!t) return;
  form.reset();
  flash(`Team ${t.name} added.`);
  loadPeople();
}

async function addUser(ev) {
  ev.preventDefault();
  const form = ev.target;
  const body = {
    name: form.name.value.trim(),
    email: form.email.value.trim(),
    phone_numbers: form.phone_numbers.value.split(",").map((s) => s.trim()).filter(Boolean),
    team_ids: [...form.querySelectorAll("input[name=team_ids]:checked")].map((i) => i.value),
    role: form.role.value,
  };
  const u = await attempt(form, () => api("/api/v1/users", send("POST", body)));
  if (!u) return;
  form.reset();
  flash(`${u.name} added.`);
  loadPeople();
}

// ---------------------------------------------------------------- telephony logs

function isoOf(local) {
  return local ? new Date(local).toISOString() : "";
}

async function loadLogs(reset) {
  const form = $("#log-filter");
  if (reset) {
    admin.logCursor = null;
    if (!admin.connectors.length) await attempt(null, async () => (admin.connectors = (await fetchAll("/api/v1/connectors")).reverse()));
    const select = form.connector_id;
    const chosen = select.value;
    select.replaceChildren(h("option", { value: "" }, "Any"), ...admin.connectors.map((c) => h("option", { value: c.id }, c.name)));
    select.value = chosen;
  }
  const q = new URLSearchParams({ limit: "100" });
  for (const name of ["connector_id", "endpoint", "outcome", "call_session_id"]) if (form[name].value.trim()) q.set(name, form[name].value.trim());
  for (const name of ["since", "until"]) if (form[name].value) q.set(name, isoOf(form[name].value));
  if (admin.logCursor) q.set("cursor", admin.logCursor);
  const turn = ++admin.logTurn;
  const page = await attempt(form, () => api("/api/v1/telephony-logs?" + q));
  if (!page || turn !== admin.logTurn) return; // a newer request is on its way
  admin.logCursor = page.next_cursor;
  const rows = page.items.map(logRow);
  if (reset) $("#log-rows").replaceChildren(...rows);
  else $("#log-rows").append(...rows);
  $("#no-logs").hidden = $("#log-rows").children.length > 0;
  $("#log-more").hidden = !page.next_cursor;
}

function logRow(r) {
  const error = r.error_code ? [h("code", {}, r.error_code), " ", r.error_message || ""] : "—";
  return h(
    "tr",
    { class: "outcome-" + r.outcome, dataset: { id: r.id } },
    h("td", {}, when(r.at)),
    h("td", {}, connectorName(r.connector_id)),
    h("td", {}, r.endpoint),
    h("td", {}, String(r.http_status ?? "—")),
    h("td", {}, h("span", { class: "badge outcome " + r.outcome }, r.outcome)),
    h("td", { class: "error-cell" }, error),
    h("td", {}, r.call_session_id || "—"),
    h("td", {}, r.latency_us == null ? "—" : (r.latency_us / 1000).toFixed(1) + " ms"),
    h("td", {}, h("details", {}, h("summary", {}, "Show"), h("pre", {}, typeof r.request === "string" ? r.request : JSON.stringify(r.request, null, 2)))),
  );
}

// ---------------------------------------------------------------- outbox

async function loadOutbox(reset) {
  const form = $("#outbox-filter");
  if (reset) {
    admin.outboxCursor = null;
    if (!admin.connectors.length) await attempt(null, async () => (admin.connectors = (await fetchAll("/api/v1/connectors")).reverse()));
  }
  const q = new URLSearchParams({ limit: "100" });
  if (form.status.value) q.set("status", form.status.value);
  if (admin.outboxCursor) q.set("cursor", admin.outboxCursor);
  const turn = ++admin.outboxTurn;
  const page = await attempt(null, () => api("/api/v1/outbox?" + q));
  if (!page || turn !== admin.outboxTurn) return; // a newer request is on its way
  admin.outboxCursor = page.next_cursor;
  const rows = page.items.map(outboxRow);
  if (reset) $("#outbox-rows").replaceChildren(...rows);
  else $("#outbox-rows").append(...rows);
  $("#no-outbox").hidden = $("#outbox-rows").children.length > 0;
  $("#outbox-more").hidden = !page.next_cursor;
}

function outboxRow(item) {
  const retry = async () => {
    const ok = await attempt(null, () => api(`/api/v1/outbox/${item.id}/retry`, send("POST")));
    if (!ok) return;
    flash("Queued for delivery now.");
    loadOutbox(true);
  };
  return h(
    "tr",
    { dataset: { id: item.id } },
    h("td", {}, when(item.created_at)),
    h("td", {}, connectorName(item.connector_id)),
    h("td", {}, h("span", { class: "badge outcome " + item.status }, item.status)),
    h("td", {}, String(item.attempts)),
    h("td", { class: "error-cell" }, item.last_error || "—"),
    h("td", {}, item.status === "pending" ? when(item.next_attempt_at) : "—"),
    h("td", {}, when(item.delivered_at)),
    h("td", {}, item.status === "delivered" ? "" : h("button", { type: "button", class: "secondary small", onclick: retry }, item.status === "failed" ? "Retry" : "Send now")),
  );
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("#signin-form").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", () => signOut());
  for (const tab of document.querySelectorAll("#sections [role=tab]")) tab.addEventListener("click", () => showPanel(tab.dataset.panel));
  arrowKeys($("#sections"));
  arrowKeys($("#connector-tabs"));
  $("#add-connector-open").addEventListener("click", () => {
    $("#add-connector").hidden = false;
    $("#add-connector").name.focus();
  });
  $("#add-connector").addEventListener("submit", addConnector);
  $("#add-connector [data-cancel]").addEventListener("click", () => ($("#add-connector").hidden = true));
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      const c = current();
      if (!c) return;
      await actions[button.dataset.action](c);
      await loadConnectors();
    });
  }
  for (const button of document.querySelectorAll("[data-copy-from]")) button.addEventListener("click", () => copy($("#" + button.dataset.copyFrom).textContent));
  $("#vn-add").addEventListener("submit", addNumber);
  $("#save-teams").addEventListener("click", saveTeams);
  $("#settings").addEventListener("submit", saveSettings);
  for (const toggle of document.querySelectorAll("#settings [data-toggle]")) toggle.addEventListener("change", () => showOptional(toggle));
  $("#team-add").addEventListener("submit", addTeam);
  $("#user-add").addEventListener("submit", addUser);
  $("#log-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadLogs(true);
  });
  $("#log-more").addEventListener("click", () => loadLogs(false));
  $("#outbox-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadOutbox(true);
  });
  $("#outbox-more").addEventListener("click", () => loadOutbox(false));
  window.addEventListener("hashchange", () => admin.token && showPanel(location.hash.slice(1)));
}

wire();
if (admin.token) start();
else signOut();
