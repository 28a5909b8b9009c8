// A garbage token, and a forged one (well-formed, bad signature): a clear error stays
// visible, and no data reaches the page.
import { expect, test } from "@playwright/test";
import { DATA_ROWS, newPage } from "./helpers";

function b64url(s: string): string {
  return Buffer.from(s).toString("base64url");
}

test("a garbage or forged token shows a clear error and no data", async ({ browser }) => {
  // The refused call itself is logged by the browser as a failed resource (401).
  const { page, errors } = await newPage(browser, [/Failed to load resource: the server responded with a status of 401/]);
  await page.goto("/");

  await page.getByTestId("token-input").fill("garbage");
  await page.getByTestId("use-token").click();
  const err = page.getByTestId("error");
  await expect(err).toHaveCount(1);
  await expect(err).toContainText("not a modvisor token");
  await expect(page.locator(DATA_ROWS)).toHaveCount(0);
  await expect(page.getByTestId("who")).toHaveText("not signed in");
  // Errors stay until dismissed.
  await page.waitForTimeout(1500);
  await expect(err).toBeVisible();
  await err.getByTestId("dismiss-error").click();
  await expect(page.getByTestId("error")).toHaveCount(0);

  const forged = [
    b64url(JSON.stringify({ alg: "EdDSA", typ: "JWT" })),
    b64url(JSON.stringify({ sub: "admin", role: "admin", aud: "modvisor", exp: 4102444800, jti: "x" })),
    b64url("not a signature"),
  ].join(".");
  await page.getByTestId("token-input").fill(forged);
  await page.getByTestId("use-token").click();
  await expect(page.getByTestId("error")).toHaveCount(1);
  await expect(page.getByTestId("error")).toContainText("refused this token");
  await expect(page.getByTestId("error")).toContainText("401");
  await page.waitForTimeout(1000);
  await expect(page.locator(DATA_ROWS)).toHaveCount(0);
  await expect(page.locator("main")).toBeHidden();
  await expect(page.getByTestId("who")).toHaveText("not signed in");
  expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
  expect(errors).toEqual([]);
});
