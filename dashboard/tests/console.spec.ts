// The console end to end against a real `modvisor up --nodes 1` (a real guest under QEMU):
// the admin approves `dummy` for tenant-a only; tenant A creates a VM with it in the page
// and sees it Loaded; tenant B sees neither A's VM nor the module; the admin's audit trail
// shows the actions live; no console errors; Forget token leaves no data.
import { expect, test, type Page } from "@playwright/test";
import { DATA_ROWS, newPage, picture, signIn, token } from "./helpers";

const MODULE = "dummy";
// Unique per run, so that the suite can run again against the same `up`.
const VM = `dash-${Date.now().toString(36)}`;

async function setPolicy(page: Page, approved: boolean, tenants: string): Promise<void> {
  await page.getByTestId("tab-modules").click();
  await page.getByTestId("module-search").fill(MODULE);
  const row = page.locator(`[data-testid="module-row"][data-module="${MODULE}"]`);
  await row.getByTestId("module-edit-policy").click();
  await expect(page.getByTestId("policy-module")).toHaveText(MODULE);
  await page.getByTestId("policy-approved").setChecked(approved);
  await page.getByTestId("policy-tenants").fill(tenants);
  await page.getByTestId("policy-save").click();
  await expect(page.getByTestId("policy-form")).toBeHidden();
  await expect(row).toContainText(approved ? tenants : "not approved");
}

test("admin approves a module for A; A loads it; B sees nothing of A; live audit", async ({ browser }) => {
  const admin = await newPage(browser);
  const a = await newPage(browser);
  const b = await newPage(browser);

  await test.step("admin signs in and sees the node", async () => {
    await signIn(admin.page, token("admin"));
    const node = admin.page.getByTestId("node-row").first();
    await expect(node).toContainText("Ready");
    await admin.page.getByTestId("tab-tenants").click();
    await expect(admin.page.locator('[data-testid="tenant-row"][data-tenant="tenant-a"]')).toBeVisible();
  });

  await test.step("admin creates a tenant and edits its quota", async () => {
    const name = `${VM}-t`;
    await admin.page.getByTestId("tenant-name").fill(name);
    await admin.page.getByTestId("tenant-vms").fill("3");
    await admin.page.getByTestId("tenant-create").click();
    const row = admin.page.locator(`[data-testid="tenant-row"][data-tenant="${name}"]`);
    await expect(row.locator("td").nth(1)).toHaveText("0 / 3");
    await row.getByTestId("tenant-edit-quota").click();
    await expect(admin.page.getByTestId("quota-tenant")).toHaveText(name);
    await admin.page.getByTestId("quota-vms").fill("5");
    await admin.page.getByTestId("quota-save").click();
    await expect(admin.page.getByTestId("quota-form")).toBeHidden();
    await expect(row.locator("td").nth(1)).toHaveText("0 / 5");
  });

  const policyEvents = admin.page.locator(
    `[data-testid="event-row"][data-action="module.set_policy"][data-resource="modules/${MODULE}"][data-actor="admin"]`,
  );
  await test.step("admin revokes dummy, then approves it for tenant-a only", async () => {
    await admin.page.getByTestId("tab-events").click();
    await expect(admin.page.getByTestId("event-row").first()).toBeVisible();
    const before = await policyEvents.count();
    await setPolicy(admin.page, false, "");
    await setPolicy(admin.page, true, "tenant-a");
    // The catalog is searchable and paginated: the search narrows 1000+ modules to a few.
    expect(await admin.page.getByTestId("module-row").count()).toBeLessThan(10);
    await admin.page.getByTestId("module-search").fill("");
    await expect(admin.page.getByTestId("module-row")).toHaveCount(50);
    await expect(admin.page.getByTestId("module-page")).toContainText("page 1 of");
    await admin.page.getByTestId("module-next").click();
    await expect(admin.page.getByTestId("module-page")).toContainText("page 2 of");
    await admin.page.getByTestId("module-search").fill("tcp_");
    await picture(admin.page, "catalog");
    await admin.page.getByTestId("module-search").fill("");
    await admin.page.getByTestId("tab-events").click();
    await expect(policyEvents).toHaveCount(before + 2);
  });

  let vmId = "";
  await test.step("tenant A creates a VM with dummy and sees it Loaded", async () => {
    await signIn(a.page, token("tenant-a"));
    await expect(a.page.getByTestId("who")).toContainText("tenant-a");
    await a.page.getByTestId("vm-name").fill(VM);
    await a.page.getByTestId("vm-modules").selectOption([MODULE]);
    await a.page.getByTestId("vm-create").click();
    const row = a.page.locator(`[data-testid="vm-row"][data-vm="${VM}"]`);
    await expect(row).toBeVisible();
    vmId = (await row.getAttribute("data-vm-id")) ?? "";
    expect(vmId).not.toBe("");
    // On failure, say where the VM stands (phase, node, reason) rather than only the phase.
    const says = async (e: unknown): Promise<never> => {
      throw new Error(`${e instanceof Error ? e.message : String(e)}\nthe VM's row: ${await row.innerText()}`);
    };
    await expect(row.getByTestId("vm-phase")).toHaveText("Running", { timeout: 120_000 }).catch(says);
    await expect(row.getByTestId("vm-requests")).toHaveText(`${MODULE}: Loaded`, { timeout: 180_000 }).catch(says);
    const detail = a.page.getByTestId("vm-detail");
    await expect(detail.locator(`[data-testid="request-row"][data-module="${MODULE}"]`)).toHaveAttribute("data-state", "Loaded");
    await expect(detail.getByTestId("vm-detail-guest-modules")).toContainText(MODULE, { timeout: 30_000 });
    const mine = await a.page.getByTestId("vm-row").count();
    await a.page.getByTestId("tab-quota").click();
    const vms = a.page.locator('[data-testid="quota-row"][data-resource="VMs"] td');
    await expect(vms.nth(1)).toHaveText(String(mine)); // used
    await expect(vms.nth(2)).toHaveText("10"); // limit
    await a.page.getByTestId("tab-vms").click();
    await picture(a.page, "tenant");
  });

  await test.step("the admin's audit trail shows vm.create live, and the VM", async () => {
    await admin.page.getByTestId("tab-events").click();
    const created = admin.page.locator(`[data-testid="event-row"][data-action="vm.create"][data-resource="vms/${vmId}"]`);
    await expect(created).toHaveCount(1, { timeout: 30_000 });
    await admin.page.getByTestId("events-filter").fill("vm.create");
    await expect(created).toHaveCount(1);
    await expect(admin.page.locator('[data-testid="event-row"][data-action="module.set_policy"]')).toHaveCount(0);
    await admin.page.getByTestId("events-filter").fill("");
    await admin.page.getByTestId("tab-vms").click();
    await expect(admin.page.locator(`[data-testid="vm-row"][data-vm="${VM}"]`)).toContainText("tenant-a");
    await admin.page.getByTestId("vm-filter-tenant").selectOption("tenant-b");
    await expect(admin.page.getByTestId("vm-row")).toHaveCount(0);
    await admin.page.getByTestId("vm-filter-tenant").selectOption("tenant-a");
    await expect(admin.page.locator(`[data-testid="vm-row"][data-vm="${VM}"]`)).toBeVisible();
  });

  await test.step("admin cordons and uncordons the node", async () => {
    await admin.page.getByTestId("tab-nodes").click();
    const node = admin.page.getByTestId("node-row").first();
    await expect(node).toContainText("1 vCPU"); // A's VM is allocated on it
    await picture(admin.page, "admin");
    await node.getByTestId("node-cordon").click();
    await expect(node.locator("td").nth(2)).toHaveText("yes");
    await node.getByTestId("node-uncordon").click();
    await expect(node.locator("td").nth(2)).toHaveText("no");
    await admin.page.getByTestId("nodes-refresh").click();
    await expect(node.getByTestId("node-heartbeat")).toContainText("read at");
  });

  await test.step("tenant B sees neither A's VM nor the module", async () => {
    await signIn(b.page, token("tenant-b"));
    await expect(b.page.getByTestId("who")).toContainText("tenant-b");
    await expect(b.page.getByTestId("vm-modules").locator("option")).not.toHaveCount(0);
    await expect(b.page.getByTestId("vm-modules").locator(`option[value="${MODULE}"]`)).toHaveCount(0);
    await b.page.getByTestId("tab-modules").click();
    await b.page.getByTestId("module-search").fill(MODULE);
    await expect(b.page.getByTestId("module-row")).toHaveCount(0);
    await b.page.getByTestId("tab-vms").click();
    await expect(b.page.getByTestId("vm-row")).toHaveCount(0);
    await b.page.getByTestId("tab-events").click();
    await expect(b.page.locator('[data-testid="event-row"][data-action="vm.create"]')).toHaveCount(0);
    expect(await b.page.content()).not.toContain(vmId);
  });

  await test.step("tenant A unloads the module, stops the VM, creates and deletes another", async () => {
    a.page.on("dialog", (d) => void d.accept());
    await a.page.getByTestId("tab-vms").click();
    const row = a.page.locator(`[data-testid="vm-row"][data-vm="${VM}"]`);
    const req = a.page.getByTestId("vm-detail").locator(`[data-testid="request-row"][data-module="${MODULE}"]`);
    await req.getByTestId("request-unload").click();
    await expect(req).toHaveAttribute("data-state", "Unloaded", { timeout: 60_000 });
    await row.getByTestId("vm-power").click();
    await expect(row.getByTestId("vm-phase")).toHaveText("Stopped", { timeout: 60_000 });
    const other = `${VM}-x`;
    await a.page.getByTestId("vm-name").fill(other);
    await a.page.getByTestId("vm-power-state").selectOption("stopped");
    await a.page.getByTestId("vm-create").click();
    const otherRow = a.page.locator(`[data-testid="vm-row"][data-vm="${other}"]`);
    await expect(otherRow).toBeVisible();
    await otherRow.getByTestId("vm-delete").click();
    await expect(otherRow).toHaveCount(0, { timeout: 30_000 });
    await expect(row).toBeVisible();
  });

  await test.step("Forget token leaves no data on the page", async () => {
    await a.page.getByTestId("tab-vms").click();
    await a.page.getByTestId("forget-token").click();
    await expect(a.page.locator(DATA_ROWS)).toHaveCount(0);
    await expect(a.page.getByTestId("who")).toHaveText("not signed in");
    await expect(a.page.getByTestId("vm-detail")).toBeHidden();
    expect(await a.page.evaluate(() => sessionStorage.length)).toBe(0);
    const html = await a.page.content();
    expect(html).not.toContain(vmId);
    expect(html).not.toContain(VM);
    expect(await a.page.getByTestId("token-input").inputValue()).toBe("");
    // A reload does not bring anything back.
    await a.page.reload();
    await expect(a.page.getByTestId("who")).toHaveText("not signed in");
    await expect(a.page.locator(DATA_ROWS)).toHaveCount(0);
  });

  await test.step("no console errors", async () => {
    expect(admin.errors).toEqual([]);
    expect(a.errors).toEqual([]);
    expect(b.errors).toEqual([]);
  });
});
