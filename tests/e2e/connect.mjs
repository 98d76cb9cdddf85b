// Opens the gateway's connect page in headless Chromium, connects an OAuth
// 2.0 account through a provider's login page, and checks the outcome.
// Usage: node connect.mjs GATEWAY_URL API_KEY ACCOUNT_ID
import { chromium } from "playwright-core";

const [base, key, account] = process.argv.slice(2);
if (!base || !key || !account) {
  console.error("usage: node connect.mjs GATEWAY_URL API_KEY ACCOUNT_ID");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`${base}/connect`);
  await page.fill("#api-key", key);
  await page.click("#key-form button");
  const row = `tr[data-account="${account}"]`;
  await page.waitForSelector(`${row} .status-pending`);
  await page.click(`${row} button.connect`);

  // The provider's login page.
  await page.waitForSelector("#login");
  await page.click("#login");

  // Back at the gateway's callback.
  await page.waitForSelector("#outcome");
  const outcome = await page.getAttribute("#outcome", "data-outcome");
  console.log(`${outcome}: ${await page.textContent("#outcome")}`);
  if (outcome !== "connected") process.exitCode = 1;

  // The accounts list shows it connected.
  await page.click("a[href='/connect']");
  await page.waitForSelector(`${row} .status-connected`);
  console.log(`the connect page shows ${account} connected`);
} finally {
  await browser.close();
}
