// Helpers shared by the agent console and the admin page. Every value from the server
// is inserted as text (textContent), never as HTML.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

/** Sets an element's text; empty values show as a dash. */
function text(el, value) {
  el.textContent = value == null || value === "" ? "—" : String(value);
}

/**
 * Builds an element: `h("button", { class: "x", onclick: f, "aria-label": "y" }, "text", child)`.
 * Strings become text nodes; attributes are set as attributes (or properties for on*).
 */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "checked" || k === "value" || k === "selected") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A JSON request with a bearer token; throws an Error carrying `status` and `body`. */
async function request(token, path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { "content-type": "application/json", authorization: "Bearer " + token, ...(options.headers || {}) },
  });
  const body = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error((body && body.error && body.error.message) || res.statusText);
    err.status = res.status;
    err.body = body;
    throw err;
  }
  return body;
}

/** Formats a server timestamp (RFC 3339) in the browser's locale. */
function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return isNaN(d) ? String(ts) : d.toLocaleString();
}
