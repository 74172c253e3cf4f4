// The admin page in a real Chromium against the real gateway.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { adminApi, artifacts, browser, fakeProvider, freePort, provider, startGateway, tempDir } from "./harness.mjs";

const EVIL = '<img src=x onerror="window.pwned=1">';

test("an admin manages connectors, numbers, teams and users, and reads the telephony log and the outbox", async () => {
  const dir = tempDir();
  const admin = "e2e-admin-token";
  const gw = await startGateway({ dir, port: await freePort(), admin, env: { UTC__OUTBOX__MAX_BACKOFF_SECS: "600" } });
  const refusing = await fakeProvider({ status: 400 });
  const api = adminApi(gw.url, admin);
  const b = await browser();
  try {
    const page = await (await b.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    const dialogs = [];
    page.on("dialog", (d) => {
      dialogs.push(d.message());
      d.accept(d.type() === "prompt" ? "Exotel Mumbai" : undefined);
    });

    // sign in: a wrong token is refused, the admin token opens the page and survives a reload
    await page.goto(gw.url + "/admin");
    await page.getByLabel("Admin token").fill("not-the-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#signin-error", { hasText: "not the admin token" }).waitFor();
    await page.getByLabel("Admin token").fill(admin);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#no-connectors").waitFor();
    await page.reload();
    await page.locator("#no-connectors").waitFor();

    // users and teams: a team, and a user whose name is HTML (rendered as text)
    await page.getByRole("tab", { name: "Users and teams" }).click();
    await page.getByLabel("New team").fill("North");
    await page.getByRole("button", { name: "Add team" }).click();
    await page.locator('#team-rows [data-team="North"]').waitFor();
    const userForm = page.locator("#user-add");
    await userForm.getByLabel("Name").fill(EVIL);
    await userForm.getByLabel("Email").fill("asha@example.com");
    await userForm.getByLabel("Phone numbers").fill("101, 9876543210");
    await userForm.getByLabel("North").check();
    await userForm.getByRole("button", { name: "Add user" }).click();
    const userRow = page.locator('#user-rows [data-email="asha@example.com"]');
    await userRow.waitFor();
    assert.equal(await userRow.locator("td").first().textContent(), EVIL);
    assert.equal(await page.locator("#user-rows img").count(), 0);
    assert.match(await userRow.textContent(), /North/);
    // a duplicate email shows the server's message
    await userForm.getByLabel("Name").fill("Someone");
    await userForm.getByLabel("Email").fill("asha@example.com");
    await userForm.getByRole("button", { name: "Add user" }).click();
    await userForm.locator(".error", { hasText: /email/i }).waitFor();

    // add a connector: its tab appears with the secret shown once and the provider URLs
    await page.getByRole("tab", { name: "Connectors" }).click();
    await page.getByRole("button", { name: "Add connector" }).click();
    await page.locator("#add-connector").getByLabel("Name").fill("Exotel");
    await page.locator("#add-connector").getByRole("button", { name: "Create" }).click();
    await page.locator("#connector-name", { hasText: "Exotel" }).waitFor();
    const [original] = (await api("GET", "/api/v1/connectors")).items;
    assert.ok(original.is_default, "the first connector is the default");
    assert.equal((await page.locator("#secret-key").textContent()).length > 10, true);
    await page.locator("#urls li", { hasText: "/v2/Telephony.svc/ShowAgentPopup" }).waitFor();
    assert.equal(await page.locator("#access-key").textContent(), original.access_key);

    // a template with an unknown placeholder is refused with the setting named; a good one saves
    const settings = page.locator("#settings");
    await settings.getByLabel("Click-to-call").check();
    await settings.getByLabel("URL template").fill(refusing.url + "/call?to=@{Nope}");
    await settings.getByRole("button", { name: "Save settings" }).click();
    await settings.locator('[data-error="click_to_call.url"]', { hasText: /Nope|placeholder/i }).waitFor();
    assert.equal(await settings.getByLabel("URL template").getAttribute("aria-invalid"), "true");
    await settings.getByLabel("URL template").fill(refusing.url + "/call?from=@virtualNumber&to=@customerNumber");
    await settings.getByLabel("Task", { exact: true }).check();
    await settings.getByLabel("Values (one per line)").fill("Interested\nNot interested");
    await settings.getByLabel("Forward dispositions to the provider").check();
    await settings.locator('[name="disposition.forward.url"]').fill(refusing.url + "/dispose");
    await settings.locator('[name="disposition.forward.body"]').fill('{"call":"@callSessionId","value":"@dispositionValue"}');
    await settings.getByRole("button", { name: "Save settings" }).click();
    await page.locator("#flash", { hasText: "Settings of Exotel saved" }).waitFor();
    const saved = await api("GET", `/api/v1/connectors/${original.id}`);
    assert.equal(saved.click_to_call.url, refusing.url + "/call?from=@virtualNumber&to=@customerNumber");
    assert.deepEqual(saved.disposition.values, ["Interested", "Not interested"]);
    assert.equal(saved.disposition.task.enabled, true);
    assert.equal(saved.disposition.forward.url, refusing.url + "/dispose");

    // a virtual number with a tag, and the connector assigned to the team
    await page.locator("#vn-add").getByLabel("Number").fill("08069000000");
    await page.locator("#vn-add").getByLabel("Tag").fill("Sales");
    await page.getByRole("button", { name: "Add number" }).click();
    const vnRow = page.locator('#vn-rows [data-number="+918069000000"]');
    await vnRow.waitFor();
    assert.equal(await vnRow.getByLabel("Tag of +918069000000").inputValue(), "Sales");
    await page.locator("#connector-teams").getByLabel("North").check();
    await page.getByRole("button", { name: "Save teams" }).click();
    await page.locator("#flash", { hasText: "Teams of Exotel saved" }).waitFor();
    const team = (await api("GET", "/api/v1/teams")).items[0];
    assert.deepEqual(team.connector_ids, [original.id]);

    // clone: same settings and team, new keys, no numbers; then make it the default
    await page.locator("#connector").getByRole("button", { name: "Clone" }).click();
    await page.locator("#connector-name", { hasText: "Exotel Mumbai" }).waitFor();
    await page.locator('#connector-tabs [role=tab][aria-selected=true]', { hasText: "Exotel Mumbai" }).waitFor();
    // the clone's numbers load after its tab is selected: wait for them, do not sample
    await page.locator("#vn-rows", { hasText: "No virtual number yet" }).waitFor();
    assert.equal(await page.locator("#connector-teams").getByLabel("North").isChecked(), true);
    const clone = (await api("GET", "/api/v1/connectors")).items.find((c) => c.name === "Exotel Mumbai");
    assert.notEqual(clone.access_key, original.access_key);
    assert.equal(clone.click_to_call.url, saved.click_to_call.url);
    // the number belongs to the original: adding it here names the conflict
    await page.locator("#vn-add").getByLabel("Number").fill("+918069000000");
    await page.getByRole("button", { name: "Add number" }).click();
    await page.locator('#vn-add [data-error="number"]', { hasText: /another connector|in use/i }).waitFor();
    await page.locator("#connector").getByRole("button", { name: "Make default" }).click();
    await page.locator('#connector-tabs [role=tab]', { hasText: "Exotel Mumbai" }).locator(".badge", { hasText: "default" }).waitFor();
    assert.equal((await api("GET", `/api/v1/connectors/${clone.id}`)).is_default, true);

    // keyboard: arrow keys move between connector tabs
    await page.locator('#connector-tabs [role=tab][aria-selected=true]').focus();
    await page.keyboard.press("ArrowLeft");
    await page.locator("#connector-name", { hasText: /^Exotel$/ }).waitFor();

    // a provider request that failed shows in the telephony-log viewer with its error
    const urls = await api("GET", `/api/v1/connectors/${original.id}/urls`);
    const keys = { access_key: urls.headers["x-LSQ-AccessKey"], secret_key: urls.headers["x-LSQ-SecretKey"] };
    const bad = await provider(gw.url, keys, "/v2/Telephony.svc/ShowAgentPopup", { DestinationNumber: "101", Direction: "Inbound", CallSessionId: "broken-1" });
    assert.equal(bad.status, 422);
    // and a disposition forward the provider refuses lands in the outbox as failed
    const users = (await api("GET", "/api/v1/users")).items;
    const { token } = await api("POST", `/api/v1/users/${users[0].id}/tokens`, {});
    const popup = await provider(gw.url, keys, "/v2/Telephony.svc/ShowAgentPopup", {
      SourceNumber: "08611795988", DestinationNumber: "101", DisplayNumber: "08069000000", Direction: "Inbound", CallSessionId: "ok-1",
    });
    assert.equal(popup.status, 200);
    const disposed = await fetch(gw.url + "/api/v1/dispositions", {
      method: "POST",
      headers: { authorization: "Bearer " + token, "content-type": "application/json" },
      body: JSON.stringify({ popup_id: popup.body.Message.Id, value: "Interested", task: { subject: "Call back", due_at: "2030-01-01T10:00:00Z" } }),
    });
    assert.equal(disposed.status, 200, await disposed.text());

    await page.getByRole("tab", { name: "Telephony logs" }).click();
    const filters = page.locator("#log-filter");
    await filters.getByLabel("Endpoint").selectOption("agent_popup");
    await filters.getByLabel("Outcome").selectOption("rejected");
    await filters.getByRole("button", { name: "Show" }).click();
    // the filter keeps only the rejected popup
    await page.waitForFunction(() => document.querySelectorAll("#log-rows tr").length === 1);
    const failedRow = page.locator("#log-rows tr", { hasText: "broken-1" });
    assert.match(await failedRow.textContent(), /422/);
    assert.match(await failedRow.textContent(), /rejected/);
    assert.match(await failedRow.textContent(), /SourceNumber/);
    assert.match(await failedRow.locator("td").nth(1).textContent(), /^Exotel$/);
    await failedRow.getByText("Show").click();
    const request = await failedRow.locator("pre").textContent();
    assert.match(request, /broken-1/);
    assert.doesNotMatch(request, /secretKey|accessKey/);
    await page.screenshot({ path: join(artifacts, "admin-logs.png"), fullPage: true });

    // the outbox shows the refused forward; retry puts it back to pending
    await page.getByRole("tab", { name: "Outbox" }).click();
    const item = page.locator("#outbox-rows tr", { hasText: "failed" });
    await item.waitFor({ timeout: 15000 }).catch(async () => {
      await page.locator("#outbox-filter").getByRole("button", { name: "Show" }).click();
      await item.waitFor({ timeout: 15000 });
    });
    assert.match(await item.textContent(), /400/);
    await item.getByRole("button", { name: "Retry" }).click();
    await page.locator("#flash", { hasText: "Queued for delivery" }).waitFor();
    assert.ok(refusing.received.some((r) => r.url === "/dispose"), "the forward reached the provider");

    // the admin page screenshot, then delete the clone (the original becomes the default again)
    await page.getByRole("tab", { name: "Connectors" }).click();
    await page.locator('#connector-tabs [role=tab]', { hasText: "Exotel Mumbai" }).click();
    await page.locator("#connector-name", { hasText: "Exotel Mumbai" }).waitFor();
    await page.screenshot({ path: join(artifacts, "admin.png"), fullPage: true });
    await page.locator("#connector").getByRole("button", { name: "Delete" }).click();
    await page.locator('#connector-tabs [role=tab]', { hasText: "Exotel Mumbai" }).waitFor({ state: "detached" });
    assert.equal((await api("GET", `/api/v1/connectors/${original.id}`)).is_default, true);
    assert.ok(dialogs.some((m) => m.startsWith("Delete Exotel Mumbai")));
    assert.equal(await page.evaluate(() => window.pwned), undefined);

    // a narrow laptop window: nothing overflows the page sideways
    await page.setViewportSize({ width: 1024, height: 700 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at 1024px`);
  } finally {
    await b.close();
    refusing.close();
    await gw.stop();
  }
});
