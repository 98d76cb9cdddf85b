// An end user connects accounts from a product's page through connect
// sessions, in headless Chromium, with a screenshot of each state of the
// connect page kept in SCREENSHOTS_DIR.
// Usage: node connect-sessions.mjs GATEWAY_URL API_KEY SCREENSHOTS_DIR
// The gateway has a `provider` OAuth 2.0 integration (its login page has a
// #login button) and a `ticket` API token one whose health check accepts
// the token `right-token` only; with SFTP_USER and SFTP_KEY set, a `files`
// SFTP integration whose server takes that user and private key.
import { mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [gateway, key, screenshots] = process.argv.slice(2);
if (!gateway || !key || !screenshots) {
  console.error("usage: node connect-sessions.mjs GATEWAY_URL API_KEY SCREENSHOTS_DIR");
  process.exit(2);
}
mkdirSync(screenshots, { recursive: true });

function check(condition, what) {
  if (!condition) throw new Error(`expected: ${what}`);
  console.log(`ok: ${what}`);
}

// A product: its page, and its backend, which makes sessions with the API
// key for the origin `allowed` (its own, unless told).
function product(host, allowedOrigin) {
  const page = `<!doctype html><meta charset=utf-8><title>Product</title>
<script src="${gateway}/connect.js"></script>
<h1>Product settings</h1>
<button id="connect-ticket">Connect Ticket Desk</button>
<button id="connect-provider">Connect Provider</button>
<button id="connect-files">Connect Partner Files</button>
<pre id="result"></pre>
<script>
  async function connect(integration, account) {
    const result = document.getElementById("result");
    const session = await (await fetch("/session?integration=" + integration + "&account=" + account)).json();
    try {
      result.textContent = JSON.stringify(await Integrations.connect({ sessionUrl: session.connect_url }));
    } catch (error) {
      result.textContent = JSON.stringify({ error: error.code });
    }
  }
  document.getElementById("connect-ticket").onclick = () => connect("ticket", "acme-tickets");
  document.getElementById("connect-provider").onclick = () => connect("provider", "acme-provider");
  document.getElementById("connect-files").onclick = () => connect("files", "acme-files");
</script>`;
  const server = createServer(async (request, response) => {
    const url = new URL(request.url, `http://${request.headers.host}`);
    if (url.pathname === "/session") {
      const origin = allowedOrigin || `http://${request.headers.host}`;
      const made = await fetch(`${gateway}/v1/connect-sessions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({
          integration: url.searchParams.get("integration"),
          account: url.searchParams.get("account"),
          end_user: { id: "user-7", display_name: "Ada at Acme" },
          allowed_origins: [origin],
        }),
      });
      response.writeHead(made.status, { "content-type": "application/json" });
      response.end(await made.text());
      return;
    }
    response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    response.end(page);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    resolve({ server, url: `http://${host}:${server.address().port}` });
  }));
}

async function accountStatus(id) {
  const response = await fetch(`${gateway}/v1/accounts/${id}`, { headers: { authorization: `Bearer ${key}` } });
  return response.ok ? (await response.json()).status : `http ${response.status}`;
}

const app = await product("127.0.0.1");
// Another origin, whose sessions allow the product's origin only.
const evil = await product("localhost", app.url);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  const shot = (target, name) => target.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
  const result = async (target) => {
    await target.waitForFunction(() => document.getElementById("result").textContent !== "");
    return JSON.parse(await target.textContent("#result"));
  };

  // An API token: a wrong token first, then the right one.
  await page.goto(app.url);
  const [popup] = await Promise.all([page.waitForEvent("popup"), page.click("#connect-ticket")]);
  await popup.waitForSelector("#connect-form");
  check((await popup.textContent("#title")) === "Connect Ticket Desk", "the page names the integration");
  check((await popup.getAttribute("#credential-token", "type")) === "password", "the token is masked");
  check((await popup.textContent("label[for=parameter-team]")).includes("Team"), "each field has a label");
  check(!popup.url().includes("ics_"), "the token leaves the address bar");
  await popup.fill("#parameter-team", "blue");
  await shot(popup, "01-form");
  await popup.click("#submit");
  await popup.waitForSelector("#form-status .message.error");
  await popup.fill("#credential-token", "wrong-token");
  await popup.click("#submit");
  await popup.waitForFunction(() => document.querySelector("#form-status .message.error")?.textContent.includes("do not work"));
  check((await accountStatus("acme-tickets")) === "http 404", "a refused token saves nothing");
  check(!(await popup.content()).includes("wrong-token"), "the refused token is not shown back");
  await shot(popup, "02-wrong-token");
  await popup.fill("#credential-token", "right-token");
  await popup.click("#submit");
  await popup.waitForSelector("main[data-state=connected]");
  await shot(popup, "03-connected");
  const ticket = await result(page);
  check(ticket.account === "acme-tickets" && ticket.status === "connected", `the product page hears ${JSON.stringify(ticket)}`);
  await popup.waitForEvent("close");
  check((await accountStatus("acme-tickets")) === "connected", "the account is saved");

  // OAuth 2.0: Continue to the provider, sign in there, come back.
  await page.evaluate(() => { document.getElementById("result").textContent = ""; });
  const [signIn] = await Promise.all([page.waitForEvent("popup"), page.click("#connect-provider")]);
  await signIn.waitForSelector("#connect-form");
  check((await signIn.textContent("#submit")) === "Continue to Provider", "OAuth 2.0 offers a Continue step");
  await shot(signIn, "04-continue-to-provider");
  await signIn.click("#submit");
  await signIn.waitForSelector("#login");
  await signIn.click("#login");
  await signIn.waitForSelector("main[data-state=connected]");
  check(!signIn.url().includes("code="), "the callback's code leaves the address bar");
  await shot(signIn, "05-provider-connected");
  const provider = await result(page);
  check(provider.account === "acme-provider" && provider.status === "connected", `the product page hears ${JSON.stringify(provider)}`);
  check((await accountStatus("acme-provider")) === "connected", "the OAuth 2.0 account is connected");
  await signIn.waitForEvent("close");

  // SFTP: the server's key shown as a fingerprint to confirm, then the
  // login checked.
  if (process.env.SFTP_USER) {
    await page.evaluate(() => { document.getElementById("result").textContent = ""; });
    const [files] = await Promise.all([page.waitForEvent("popup"), page.click("#connect-files")]);
    await files.waitForSelector("#connect-form");
    await files.fill("#credential-username", process.env.SFTP_USER);
    await files.fill("#credential-private_key", process.env.SFTP_KEY);
    await files.click("#submit");
    await files.waitForFunction(() => document.querySelector("#form-status .message.error")?.textContent.includes("server's key"));
    await files.click("#fetch-host-key");
    await files.waitForSelector("#fingerprint");
    check((await files.textContent("#fingerprint")).startsWith("SHA256:"), "the server's key is shown as a SHA256 fingerprint");
    await files.click("#submit");
    await files.waitForFunction(() => document.querySelector("#form-status .message.error")?.textContent.includes("Confirm"));
    await files.check("#confirm-host-key");
    await shot(files, "08-sftp-host-key");
    await files.click("#submit");
    await files.waitForSelector("main[data-state=connected]");
    const sftp = await result(page);
    check(sftp.account === "acme-files" && sftp.status === "connected", `the product page hears ${JSON.stringify(sftp)}`);
  }

  // A used link says so.
  const used = await context.newPage();
  const made = await (await fetch(`${gateway}/v1/connect-sessions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ integration: "ticket", ttl_seconds: 60 }),
  })).json();
  await used.goto(made.connect_url);
  await used.waitForSelector("#connect-form");
  await used.fill("#parameter-team", "red");
  await used.fill("#credential-token", "right-token");
  await used.click("#submit");
  await used.waitForSelector("main[data-state=connected]");
  await used.goto(made.connect_url);
  await used.waitForSelector("main[data-state=refused]");
  check((await used.textContent("#title")) === "This link was used already", "a used link is refused with a clear page");
  await shot(used, "06-link-used");
  await used.goto(`${gateway}/connect/session#ics_forged`);
  await used.waitForSelector("main[data-state=refused]");
  check((await used.textContent("#title")) === "This link is not valid", "a forged link is refused");

  // Dark mode.
  await used.emulateMedia({ colorScheme: "dark" });
  const dark = await (await fetch(`${gateway}/v1/connect-sessions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ integration: "ticket" }),
  })).json();
  await used.goto(dark.connect_url);
  await used.waitForSelector("#connect-form");
  await shot(used, "07-dark-mode");

  // A page on an origin the session does not allow hears nothing: the
  // popup connects, but the outcome is posted to the allowed origin only,
  // and the session's state is refused to this origin.
  const other = await context.newPage();
  await other.goto(evil.url);
  const [evilPopup] = await Promise.all([other.waitForEvent("popup"), other.click("#connect-ticket")]);
  await evilPopup.waitForSelector("#connect-form");
  await evilPopup.fill("#credential-token", "right-token");
  await evilPopup.click("#submit");
  const heard = await result(other);
  check(heard.error === "popup_closed" && !heard.account, `a page of another origin gets nothing: ${JSON.stringify(heard)}`);
} finally {
  await browser.close();
  app.server.close();
  evil.server.close();
}
