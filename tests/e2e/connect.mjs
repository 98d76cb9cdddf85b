// Walks every action of the gateway's connect page in headless Chromium,
// and keeps a screenshot of each state in SCREENSHOTS_DIR.
// Usage: node connect.mjs GATEWAY_URL API_KEY SCREENSHOTS_DIR
// The gateway has a `provider` OAuth 2.0 integration (its login page has a
// #login button), a `legacy` HTTP Basic one, and 30 accounts `bulk-NN`.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, key, screenshots] = process.argv.slice(2);
if (!base || !key || !screenshots) {
  console.error("usage: node connect.mjs GATEWAY_URL API_KEY SCREENSHOTS_DIR");
  process.exit(2);
}
mkdirSync(screenshots, { recursive: true });

function check(condition, what) {
  if (!condition) throw new Error(`expected: ${what}`);
  console.log(`ok: ${what}`);
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
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(15000);
  const shot = (name) => page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
  const message = (id) => page.textContent(`#${id}`);
  const confirm = async () => {
    await page.waitForSelector("#confirm[open]");
    await page.click("#confirm-ok");
    await page.waitForSelector("#confirm:not([open])", { state: "attached" });
  };
  const details = async (account) => {
    await page.click(`tr[data-account="${account}"] button.details`);
    await page.waitForFunction((id) => document.getElementById("detail-id").textContent === id, account);
  };

  // Before a key: an empty state, nothing else.
  await page.goto(`${base}/connect`);
  await page.waitForSelector("#empty");
  check(await page.isHidden("#workspace"), "no tables before a key is entered");
  await shot("01-empty-state");

  // A wrong key is refused where the key is entered.
  await page.fill("#api-key", "ik_wrong_key");
  await page.click("#key-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("key-message").textContent.includes("refused"));
  check(await page.isHidden("#workspace"), "a refused key shows nothing");

  await page.fill("#api-key", key);
  await page.click("#key-form button[type=submit]");
  await page.waitForSelector("#workspace:not([hidden])");
  await page.waitForSelector('tr[data-account="bulk-00"]');
  check((await page.$$("#accounts tbody tr")).length === 25, "the first page holds 25 accounts");
  await shot("02-accounts");

  // Paging.
  await page.click("#next-page");
  await page.waitForSelector('tr[data-account="bulk-25"]');
  check((await page.textContent("#page-label")) === "Page 2", "the second page");
  await page.click("#previous-page");
  await page.waitForSelector('tr[data-account="bulk-00"]');

  // A Basic account: the user name is shown as typed, the password masked.
  await page.selectOption("#integration", "legacy");
  check((await page.getAttribute('#fields input[data-name="username"]', "type")) === "text", "the user name is not masked");
  check((await page.getAttribute('#fields input[data-name="password"]', "type")) === "password", "the password is masked");
  await page.fill("#account-id", "b1");
  await page.fill('#fields input[data-name="username"]', "ada");
  await page.fill('#fields input[data-name="password"]', "s3cret-password");
  await page.click("#account-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("create-message").textContent.startsWith("Created account b1"));
  await page.waitForFunction(() => document.getElementById("detail-id").textContent === "b1");
  check((await page.textContent("#detail-credentials")).includes("password"), "the detail names the credentials");
  check(!(await page.content()).includes("s3cret-password"), "the password is never shown back");
  await shot("03-account-created");

  // The same id again: the error is shown by the form.
  await page.selectOption("#integration", "legacy");
  await page.fill("#account-id", "b1");
  await page.fill('#fields input[data-name="username"]', "ada");
  await page.fill('#fields input[data-name="password"]', "another");
  await page.click("#account-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("create-message").className.includes("error"));
  check((await message("create-message")).length > 0, "the form says why the account was not created");
  await shot("04-create-error");

  // An OAuth 2.0 account: created, then connected through the provider.
  await page.selectOption("#integration", "provider");
  await page.fill("#account-id", "p1");
  await page.click("#account-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("detail-id").textContent === "p1");
  check((await page.textContent("#action-connect")) === "Connect", "a pending account offers Connect");
  await page.click("#action-connect");
  await page.waitForSelector("#confirm[open]");
  await shot("05-confirm-connect");
  await page.click("#confirm-ok");
  await page.waitForSelector("#login");
  await page.click("#login");
  await page.waitForSelector("#outcome");
  check((await page.getAttribute("#outcome", "data-outcome")) === "connected", "the callback reports the account connected");
  await page.click("a[href='/connect']");
  // p1 sorts after the 25 accounts of the first page: the integration
  // filter finds it.
  await page.waitForSelector('tr[data-account="bulk-00"]');
  await page.selectOption("#filter-integration", "provider");
  await page.waitForSelector('tr[data-account="p1"]');
  check((await page.$$("#accounts tbody tr")).length === 1, "the integration filter lists its accounts only");
  await details("p1");
  check((await page.textContent("#detail-status")).includes("Connected"), "the account is connected");
  check((await page.textContent("#action-connect")) === "Reconnect", "a connected account offers Reconnect");
  await shot("06-connected");

  // Refresh, with confirmation; the message is next to the actions.
  await page.click("#action-refresh");
  await confirm();
  await page.waitForFunction(() => document.getElementById("detail-message").textContent === "Refreshed p1.");
  check((await page.textContent("#detail-refreshed")) !== "—", "the refresh time is shown");

  // Revoke: the account goes back to pending.
  await page.click("#action-revoke");
  await confirm();
  await page.waitForFunction(() => document.getElementById("detail-message").textContent.startsWith("Revoked"));
  check((await page.textContent("#detail-status")).includes("Pending"), "a revoked account is pending");
  await shot("07-revoked");

  // Filters and search.
  await page.selectOption("#filter-integration", "");
  await page.waitForSelector('tr[data-account="bulk-00"]');
  await page.selectOption("#filter-status", "pending");
  await page.waitForFunction(() => !document.querySelector('tr[data-account="bulk-00"]'));
  check((await page.$$("#accounts tbody tr")).length === 1, "only the pending account is listed");
  await page.selectOption("#filter-status", "");
  await page.waitForSelector('tr[data-account="bulk-00"]');
  await page.fill("#search", "b1");
  check((await page.$$("#accounts tbody tr")).length === 1, "the search finds b1");
  await shot("08-search");

  // Remove, with confirmation; cancelling keeps it.
  await details("b1");
  await page.click("#action-remove");
  await page.waitForSelector("#confirm[open]");
  await page.click("#confirm-cancel");
  check(await page.isVisible('tr[data-account="b1"]'), "a cancelled removal keeps the account");
  await page.click("#action-remove");
  await confirm();
  await page.waitForFunction(() => document.getElementById("accounts-message").textContent === "Removed account b1.");
  check(!(await page.$('tr[data-account="b1"]')), "the removed account is gone");
  await shot("09-removed");

  // Dark mode follows the system's.
  await page.emulateMedia({ colorScheme: "dark" });
  await page.fill("#search", "");
  await page.selectOption("#filter-integration", "provider");
  await page.waitForSelector('tr[data-account="p1"]');
  await details("p1");
  await shot("10-dark-mode");

  // Forgetting the key empties the page.
  await page.click("#forget-key");
  check(await page.isHidden("#workspace"), "a forgotten key hides everything");
  console.log("every action of the connect page works");
} finally {
  await browser.close();
}
