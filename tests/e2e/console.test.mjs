// The agent console in a real Chromium against the real gateway.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { adminApi, artifacts, browser, fakeProvider, freePort, provider, startGateway, tempDir } from "./harness.mjs";

const EVIL = '<img src=x onerror="window.pwned=1">';

test("an agent signs in by SSO, sees popups, switches leads, disposes, and calls", async () => {
  const dir = tempDir();
  const admin = "e2e-admin-token";
  const gw = await startGateway({ dir, port: await freePort(), admin });
  const fake = await fakeProvider();
  const api = adminApi(gw.url, admin);
  const b = await browser();
  try {
    const c = await api("POST", "/api/v1/connectors", {
      name: "Exotel",
      disposition: { values: ["Interested", "Not interested"], task: { enabled: true, mandatory: true } },
      click_to_call: { url: fake.url + "/call?from=@virtualNumber&to=@customerNumber", method: "GET" },
    });
    await api("POST", `/api/v1/connectors/${c.id}/virtual-numbers`, { number: "08069000000", tag: "Sales" });
    const user = await api("POST", "/api/v1/users", { name: "Asha", email: "asha@example.com", phone_numbers: ["101"] });
    const older = await api("POST", "/api/v1/leads", { first_name: "Meera", last_name: "Rao", phone: "8611795988", stage: "Prospect" });
    await new Promise((r) => setTimeout(r, 5));
    const evil = await api("POST", "/api/v1/leads", { first_name: EVIL, mobile: "8611795988" });

    const sso = await provider(gw.url, c, "/api/v1/sso", { UserId: user.id });
    assert.equal(sso.status, 200);
    const consoleUrl = new URL(sso.body.Message.ConsoleUrl);
    const context = await b.newContext();
    const tab1 = await context.newPage();
    await tab1.goto(gw.url + "/" + consoleUrl.search);
    await tab1.locator("#conn.connected").waitFor();
    assert.ok(!tab1.url().includes("sso="), "the one-time key left the address bar");
    const tab2 = await context.newPage();
    await tab2.goto(gw.url + "/");
    await tab2.locator("#conn.connected").waitFor();

    // a provider POST makes the popup appear in both tabs
    const popup = await provider(gw.url, c, "/v2/Telephony.svc/ShowAgentPopup", {
      SourceNumber: "08611795988", DestinationNumber: "101", DisplayNumber: "08069000000", Direction: "Inbound", CallSessionId: "e2e-1",
    });
    assert.equal(popup.body.Message.Delivered, 2);
    const card = tab1.locator(`[data-popup-id="${popup.body.Message.Id}"]`);
    await card.waitFor();
    await tab2.locator(`[data-popup-id="${popup.body.Message.Id}"]`).waitFor();
    // the newest lead is shown, its HTML name as text
    assert.equal(await card.locator(".lead-name").textContent(), EVIL);
    assert.equal(await card.locator(".lead-name img").count(), 0);
    assert.equal(await tab1.evaluate(() => window.pwned), undefined);
    assert.match(await card.locator(".via").textContent(), /\+918069000000 \(Sales\)/);
    await card.screenshot({ path: join(artifacts, "popup.png") });

    // candidates switch the shown lead
    await card.getByRole("button", { name: "Meera Rao" }).click();
    assert.equal(await card.locator(".lead-name").textContent(), "Meera Rao");
    assert.equal(await card.locator(".stage").textContent(), "Prospect");

    // a missing mandatory task shows the server's field error
    await card.locator("select[name=value]").selectOption("Interested");
    await card.getByRole("button", { name: "Save disposition" }).click();
    await card.locator('[data-field="task"]', { hasText: "mandatory" }).waitFor();

    // a valid one saves and closes the popup in the other tab
    await card.locator("input[name=task-subject]").fill("Call back");
    await card.locator("input[name=task-due]").fill("2030-01-01T10:00");
    await card.getByRole("button", { name: "Save disposition" }).click();
    await tab2.locator(`[data-popup-id="${popup.body.Message.Id}"]`).waitFor({ state: "detached" });
    await card.waitFor({ state: "detached" });
    const meera = await api("GET", `/api/v1/leads/${older.id}`);
    assert.equal(meera.fields.Disposition, "Interested", "the disposition went to the chosen candidate");

    // call_logged shows the duration and a playable recording
    const second = await provider(gw.url, c, "/v2/Telephony.svc/ShowAgentPopup", {
      SourceNumber: "08611795988", DestinationNumber: "101", Direction: "Inbound", CallSessionId: "e2e-2",
    });
    const card2 = tab1.locator(`[data-popup-id="${second.body.Message.Id}"]`);
    await card2.waitFor();
    const logged = await provider(gw.url, c, "/v2/Telephony.svc/LogCall", {
      SourceNumber: "08611795988", DestinationNumber: "101", DisplayNumber: "08069000000", Direction: "Inbound",
      CallSessionId: "e2e-2", StartTime: "2030-01-01 10:00:00", EndTime: "2030-01-01 10:02:00", CallDuration: 120,
      Status: "Answered", ResourceURL: "https://recordings.example/e2e-2.mp3",
    });
    assert.equal(logged.status, 200);
    await card2.locator(".call-summary", { hasText: "answered · 120 s" }).waitFor();
    assert.equal(await card2.locator("audio").getAttribute("src"), "https://recordings.example/e2e-2.mp3");

    // click-to-call reaches the fake provider with the chosen virtual number
    await tab1.locator("#q").fill("Meera");
    await tab1.locator("#vn").selectOption("+918069000000");
    await tab1.getByRole("button", { name: "Search" }).click();
    await tab1.getByRole("button", { name: "Call Meera Rao" }).click();
    await tab1.locator("#call-result", { hasText: "Call placed" }).waitFor();
    assert.equal(fake.received.length, 1);
    assert.equal(fake.received[0].url, "/call?from=%2B918069000000&to=8611795988");
    await tab1.screenshot({ path: join(artifacts, "console.png"), fullPage: true });
  } finally {
    await b.close();
    fake.close();
    await gw.stop();
  }
});

test("after a restart the console reconnects and shows the popups open before and posted during it", async () => {
  const dir = tempDir();
  const admin = "e2e-admin-token";
  const port = await freePort();
  let gw = await startGateway({ dir, port, admin });
  const api = adminApi(gw.url, admin);
  const b = await browser();
  try {
    const c = await api("POST", "/api/v1/connectors", { name: "Exotel" });
    const user = await api("POST", "/api/v1/users", { name: "Asha", email: "asha@example.com", phone_numbers: ["101"] });
    const { token } = await api("POST", `/api/v1/users/${user.id}/tokens`, {});
    const page = await (await b.newContext()).newPage();
    await page.goto(gw.url + "/");
    await page.locator("#token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#conn.connected").waitFor();
    const before = await provider(gw.url, c, "/v2/Telephony.svc/ShowAgentPopup", {
      SourceNumber: "08611795988", DestinationNumber: "101", Direction: "Inbound", CallSessionId: "before",
    });
    await page.locator(`[data-popup-id="${before.body.Message.Id}"]`).waitFor();

    await gw.stop();
    await page.locator("#conn.reconnecting").waitFor();
    gw = await startGateway({ dir, port, admin });
    const during = await provider(gw.url, c, "/v2/Telephony.svc/ShowAgentPopup", {
      SourceNumber: "09000000001", DestinationNumber: "101", Direction: "Inbound", CallSessionId: "during",
    });

    await page.locator("#conn.connected").waitFor({ timeout: 30000 });
    await page.locator(`[data-popup-id="${during.body.Message.Id}"]`).waitFor();
    assert.equal(await page.locator(`[data-popup-id="${before.body.Message.Id}"]`).count(), 1);
  } finally {
    await b.close();
    await gw.stop();
  }
});
