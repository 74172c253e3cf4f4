// Test harness: the real gateway binary on a fixed free port with a temp SQLite file, a
// real local HTTP server playing the provider, and Debian's Chromium via playwright-core.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const artifacts = join(here, "artifacts");
mkdirSync(artifacts, { recursive: true });
const targetDir = process.env.CARGO_TARGET_DIR || join(here, "..", "..", "target");
const bin = process.env.UTC_BIN || join(targetDir, "debug", "utc-gateway");

export async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Starts the gateway; resolves with { url, stop() } once it listens. */
export async function startGateway({ dir, port, admin, env = {} }) {
  const child = spawn(bin, ["serve"], {
    cwd: dir,
    env: {
      ...process.env,
      UTC__SERVER__LISTEN: `127.0.0.1:${port}`,
      UTC__SERVER__PUBLIC_URL: `http://127.0.0.1:${port}`,
      UTC__STORE__URL: `sqlite://${dir}/utc.db`,
      UTC__AUTH__ADMIN_TOKEN: admin,
      UTC__LOG__LEVEL: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise((resolve, reject) => {
    let buf = "";
    child.stdout.on("data", (d) => {
      buf += d;
      const m = buf.match(/listening on (\S+)/);
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error("gateway exited " + code)));
  });
  return {
    url,
    stop: () => new Promise((r) => { child.once("exit", r); child.kill("SIGTERM"); }),
  };
}

export function tempDir() {
  return mkdtempSync(join(tmpdir(), "utc-e2e-"));
}

/** A JSON API client with the admin token. */
export function adminApi(url, admin) {
  return async (method, path, body) => {
    const res = await fetch(url + path, {
      method,
      headers: { authorization: "Bearer " + admin, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
}

/** Posts to a provider endpoint with the connector's keys. */
export async function provider(url, connector, path, body) {
  const res = await fetch(`${url}${path}?accessKey=${connector.access_key}&secretKey=${connector.secret_key}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** A local HTTP server playing the provider; records every request. */
export async function fakeProvider({ status = 200 } = {}) {
  const received = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      received.push({ method: req.method, url: req.url, body });
      res.writeHead(status, { "content-type": "text/plain" });
      res.end(status < 400 ? "queued" : "refused: unknown agent");
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, received, close: () => server.close() };
}

export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
