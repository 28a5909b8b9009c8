// The trust store in the console (admin): a certificate made by `modvisor module keygen`
// is trusted from its PEM and listed with its subject and key; a broken PEM is refused
// with the server's reason and adds nothing; a module's policy form shows its signers
// (saving it keeps them); the certificate is removed again.
import { expect, test } from "@playwright/test";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { newPage, signIn, token } from "./helpers";

test("admin trusts an operator certificate, sees it, and removes it", async ({ browser }) => {
  const bin = process.env.MODVISOR_BIN;
  if (!bin) throw new Error("MODVISOR_BIN is not set (ci.sh sets it to the modvisor binary)");
  const dir = mkdtempSync(path.join(tmpdir(), "dash-trust-"));
  const name = `dash-${Date.now().toString(36)}`;
  const cert = path.join(dir, "operator.crt");
  execFileSync(bin, ["module", "keygen", "--name", name, "--bits", "2048", "--key", path.join(dir, "operator.pem"), "--cert", cert]);
  const pem = readFileSync(cert, "utf8");
  rmSync(dir, { recursive: true });

  // The refused PUT is logged by the browser as a failed resource load.
  const { page, errors } = await newPage(browser, [/status of 400/]);
  await signIn(page, token("admin"));
  await page.getByTestId("tab-modules").click();

  await test.step("a certificate is trusted from its PEM", async () => {
    await page.getByTestId("trust-name").fill(name);
    await page.getByTestId("trust-pem").fill(pem);
    await page.getByTestId("trust-submit").click();
    const row = page.locator(`[data-testid="trust-row"][data-trust="${name}"]`);
    await expect(row).toContainText(`CN=${name}`);
    await expect(row).toContainText("rsa-2048");
  });

  await test.step("a broken PEM is refused and adds nothing", async () => {
    await page.getByTestId("trust-name").fill("broken");
    await page.getByTestId("trust-pem").fill("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----");
    await page.getByTestId("trust-submit").click();
    await expect(page.getByTestId("errors")).toContainText("trust broken");
    await expect(page.getByTestId("errors")).toContainText("(400)");
    await expect(page.locator('[data-testid="trust-row"][data-trust="broken"]')).toHaveCount(0);
  });

  await test.step("a policy form shows the module's signers and licenses", async () => {
    await page.getByTestId("module-search").fill("tcp_bbr");
    await page.locator('[data-testid="module-row"][data-module="tcp_bbr"]').getByTestId("module-edit-policy").click();
    await expect(page.getByTestId("policy-signers")).toHaveValue("kernel");
    await expect(page.getByTestId("policy-licenses")).toHaveValue("");
    await page.getByTestId("policy-cancel").click();
  });

  await test.step("the certificate is removed", async () => {
    page.once("dialog", (d) => void d.accept());
    const row = page.locator(`[data-testid="trust-row"][data-trust="${name}"]`);
    await row.getByTestId("trust-remove").click();
    await expect(row).toHaveCount(0);
  });
  expect(errors).toEqual([]);
});
