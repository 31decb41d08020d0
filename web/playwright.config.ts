// Browser tests of the storefront: Debian's Chromium (never a downloaded
// browser) against the stack `cargo xtask storefront` starts, whose
// gateway serves the built storefront at SHOP_URL.

import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "tests",
  outputDir: "test-results/runs",
  timeout: 90_000,
  expect: { timeout: 20_000 },
  // One shop, one Chromium: tests run one after another on two cores.
  workers: 1,
  reporter: [["list"]],
  use: {
    baseURL: process.env.SHOP_URL ?? "http://127.0.0.1:8080",
    browserName: "chromium",
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
      ],
    },
    screenshot: "only-on-failure",
    trace: "retain-on-failure",
  },
});
