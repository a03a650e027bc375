// Drives the example app in headless Chromium as a new user would: sign up, sign out,
// sign in again, add a todo and complete it, and see the stats and the leaderboard
// include each change on the first read after it (read-your-writes), then saves a
// screenshot. Run by examples/web's TestAgainstMakeRun, which starts the system and
// serves the app from another origin than the API; it exits non-zero on the first
// failure.
//
// Environment: WEB_URL (the app, with ?api=), EMAIL (an address not signed up yet),
// SCREENSHOT (where to save it), CHROMIUM (the browser's executable).
import { chromium } from "playwright-core";

const { WEB_URL, EMAIL, SCREENSHOT, CHROMIUM } = process.env;
for (const [name, value] of Object.entries({ WEB_URL, EMAIL, SCREENSHOT, CHROMIUM })) {
  if (!value) throw new Error(`${name} is not set`);
}
const name = "Ada";
const password = "correct horse battery";
const title = "write the outbox";
// A bound on each wait, not a speed requirement: the machine may be loaded.
const waitLimit = 60_000;

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  timeout: waitLimit,
  // As root (CI) Chromium needs --no-sandbox; the rest keep it off the network, which
  // is closed here.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  page.setDefaultTimeout(waitLimit);
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

  /** Waits until predicate(arg) holds in the page, failing at once if the app shows an error. */
  async function until(what, predicate, arg) {
    try {
      await page.waitForFunction(({ src, arg }) => {
        const message = document.getElementById("message");
        if (message && !message.hidden) return true;
        return new Function("arg", `return (${src})(arg);`)(arg);
      }, { src: predicate.toString(), arg }, { timeout: waitLimit });
    } catch (err) {
      throw new Error(`waiting for ${what}: ${err.message}`);
    }
    const message = page.locator("#message");
    if (await message.isVisible()) throw new Error(`waiting for ${what}, the app said: ${await message.textContent()}`);
    console.log(`ok: ${what}`);
  }

  const text = (selector) => page.locator(selector).textContent();
  // Seen as a person sees the page: one view shown, the other not rendered at all.
  const signedIn = () => document.getElementById("signed-in").checkVisibility()
    && !document.getElementById("signed-out").checkVisibility()
    && document.getElementById("stats").dataset.token !== undefined;
  const signedOut = () => document.getElementById("signed-out").checkVisibility()
    && !document.getElementById("signed-in").checkVisibility() && localStorage.length === 0;

  /** The consistency tokens the stats and the leaderboard were last read with. */
  const readTokens = () => page.evaluate(() => [document.getElementById("stats").dataset.token,
    document.getElementById("leaderboard").dataset.token]);

  /**
   * Does a write, then waits for the reads the app makes after it: both read-model
   * sections must have been read with a new consistency token, the write's own.
   */
  async function write(what, action) {
    const before = await readTokens();
    await action();
    await until(`${what}: stats and leaderboard read with its consistency token`, (before) =>
      ["stats", "leaderboard"].every((id, i) => {
        const token = document.getElementById(id).dataset.token;
        return token !== undefined && token !== "" && token !== before[i];
      }), before);
  }

  async function expectReadModel(what, want) {
    const got = {
      open: await text("#stats-open"),
      completed: await text("#stats-completed"),
      total: await text("#stats-total"),
      statsConsistency: await page.locator("#stats-freshness").getAttribute("data-consistency"),
      me: await text("#leaders li.me"),
      leaderboardConsistency: await page.locator("#leaderboard-freshness").getAttribute("data-consistency"),
      // Shown only when the browser may read X-Projection-Watermark (CORS exposes it).
      watermarks: (await text("#stats-freshness")).includes("Read model as of")
        && (await text("#leaderboard-freshness")).includes("Read model as of"),
    };
    const wrong = Object.keys(want).filter((k) => got[k] !== want[k]);
    if (wrong.length > 0) {
      throw new Error(`${what}: the first read after the write shows ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }
    console.log(`ok: ${what}: ${JSON.stringify(got)}`);
  }

  await page.goto(WEB_URL);
  await until("the sign-up form", () => document.getElementById("signed-out").checkVisibility());

  const signUp = page.locator("#sign-up");
  await signUp.locator("[name=email]").fill(EMAIL);
  await signUp.locator("[name=display_name]").fill(name);
  await signUp.locator("[name=password]").fill(password);
  await signUp.locator("button[type=submit]").click();
  await until("signed up and in", signedIn);

  await page.locator("#sign-out").click();
  await until("signed out, the token forgotten", signedOut);

  // A refusal reaches the page as the API's problem, not as a CORS error.
  const signIn = page.locator("#sign-in");
  await signIn.locator("[name=email]").fill(EMAIL);
  await signIn.locator("[name=password]").fill(`not ${password}`);
  const reported = problems.length;
  await signIn.locator("button[type=submit]").click();
  await page.locator("#message").waitFor({ state: "visible" });
  const refusal = await text("#message");
  if (!refusal.includes("password") || refusal.includes("could not be reached")) {
    throw new Error(`a wrong password: the app said ${JSON.stringify(refusal)}, want the API's invalid-credentials problem`);
  }
  console.log(`ok: a wrong password refused: ${refusal}`);
  // The browser logs the 401 itself; only that is expected.
  problems.splice(reported, problems.length, ...problems.slice(reported).filter((p) => !p.includes("status of 401")));
  await signIn.locator("[name=password]").fill(password);
  await signIn.locator("button[type=submit]").click();
  await until("signed in again", signedIn);
  const who = await text("#who-name");
  if (who !== name) throw new Error(`signed in as ${JSON.stringify(who)}, want ${name}`);

  await write("add a todo", async () => {
    await page.locator("#add-todo [name=title]").fill(title);
    await page.locator("#add-todo [name=title]").press("Enter");
  });
  await until("the todo listed", (title) => [...document.querySelectorAll("#todos li")].some((li) => li.textContent.includes(title)), title);
  await expectReadModel("after adding", {
    open: "1", completed: "0", total: "1", statsConsistency: "fresh", me: `${name}: 0 of 1 done`, leaderboardConsistency: "fresh", watermarks: true,
  });

  await write("complete it", () => page.getByRole("checkbox", { name: `completed: ${title}` }).click());
  await until("the todo shown done", () => document.querySelector("#todos li.done") !== null);
  await expectReadModel("after completing", {
    open: "0", completed: "1", total: "1", statsConsistency: "fresh", me: `${name}: 1 of 1 done`, leaderboardConsistency: "fresh", watermarks: true,
  });

  if (problems.length > 0) throw new Error(`the page reported:\n${problems.join("\n")}`);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  console.log(`screenshot: ${SCREENSHOT}`);
} catch (err) {
  if (problems.length > 0) console.error(`the page reported:\n${problems.join("\n")}`);
  throw err;
} finally {
  await browser.close();
}
