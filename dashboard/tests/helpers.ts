import { expect, type Browser, type Page } from "@playwright/test";
import { readFileSync } from "node:fs";
import path from "node:path";

/** A token `modvisor up` wrote: admin, tenant-a, tenant-b. */
export function token(name: string): string {
  const dir = process.env.MODVISOR_TOKENS;
  if (!dir) throw new Error("MODVISOR_TOKENS is not set (ci.sh sets it to <data-dir>/tokens)");
  return readFileSync(path.join(dir, `${name}.jwt`), "utf8").trim();
}

/** Console errors and uncaught exceptions of a page; `allow` filters expected ones. */
export function watch(page: Page, allow: RegExp[] = []): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const text = m.text();
    if (!allow.some((a) => a.test(text))) errors.push(`console: ${text}`);
  });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

/** Every data row of the page (each is marked with a data-testid ending in -row). */
export const DATA_ROWS = '[data-testid$="-row"]';

export async function signIn(page: Page, tok: string): Promise<void> {
  await page.goto("/");
  await page.getByTestId("token-input").fill(tok);
  await page.getByTestId("use-token").click();
  await expect(page.getByTestId("who")).not.toHaveText("not signed in");
  await expect(page.getByTestId("live-status")).toHaveText("live", { timeout: 20_000 });
}

export async function newPage(browser: Browser, allow: RegExp[] = []): Promise<{ page: Page; errors: string[] }> {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  return { page, errors: watch(page, allow) };
}

/**
 * Saves a picture of the page as `<name>.png` in MODVISOR_SCREENSHOTS (the README's, in
 * docs/screenshots) when that is set; otherwise does nothing.
 */
export async function picture(page: Page, name: string): Promise<void> {
  const dir = process.env.MODVISOR_SCREENSHOTS;
  if (!dir) return;
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(dir, `${name}.png`) });
}
