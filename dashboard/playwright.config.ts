import { defineConfig } from "@playwright/test";

// The suite runs against a real `modvisor up` that ci.sh starts: MODVISOR_BASE_URL is its
// address, MODVISOR_TOKENS the directory of its tokens. Debian's chromium, headless.
export default defineConfig({
  testDir: "tests",
  timeout: 240_000,
  expect: { timeout: 15_000 },
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  outputDir: process.env.PLAYWRIGHT_OUTPUT_DIR ?? "test-results",
  globalTimeout: 280_000,
  use: {
    baseURL: process.env.MODVISOR_BASE_URL,
    browserName: "chromium",
    headless: true,
    actionTimeout: 15_000,
    navigationTimeout: 15_000,
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
});
