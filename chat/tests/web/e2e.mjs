// Two echo nodes, each with its page in headless Chromium: run by chat/tests/web.rs,
// which starts the nodes (ALICE_URL, BOB_URL carry their one-time links) and restarts
// bob's node when this script prints "RESTART bob" (it answers "restarted" on stdin).
// Prints PASS at the end; any failure exits non-zero with a screenshot in SHOTS.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const { ALICE_URL, BOB_URL, SHOTS } = process.env;
const TIMEOUT = 15000;
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // Nothing leaves the machine: no proxy but a dead one, no DNS but loopback.
    '--proxy-server=http://127.0.0.1:9', '--proxy-bypass-list=127.0.0.1;localhost;[::1]',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost, EXCLUDE [::1]',
  ],
});

/** @type {import('playwright-core').Page[]} */
const pages = [];
let step = 'start';

async function open(url, name) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => console.log(`${name} page error: ${e.message}`));
  page.on('dialog', (d) => {
    console.log(`${name} DIALOG ${d.message()}`);
    d.dismiss();
  });
  await page.goto(url);
  await page.waitForSelector('#conn.up');
  pages.push(page);
  return page;
}

async function say(page, text) {
  await page.fill('#send-input', text);
  await page.press('#send-input', 'Enter');
}

async function sees(page, text) {
  await page.locator('#messages .text', { hasText: text }).first().waitFor();
}

try {
  step = 'open both pages';
  const alice = await open(ALICE_URL, 'alice');
  const bob = await open(BOB_URL, 'bob');
  // The token worked once; the page is served from the cookie now.
  if (new URL(alice.url()).search.includes('token')) throw new Error('token left in the URL');

  step = 'room message both ways';
  await alice.locator('#rooms button', { hasText: '#general' }).waitFor();
  await say(alice, 'hello from alice');
  await sees(bob, 'hello from alice');
  await say(bob, 'hi alice, from bob');
  await sees(alice, 'hi alice, from bob');

  step = 'peer text is text, never HTML';
  const evil = '<img src=x onerror="window.__xss=1;document.title=\'pwned\'"><script>window.__xss=2</script>';
  await say(bob, evil);
  await sees(alice, 'onerror');
  // No waiting for a handler that might fire: an injected <img> or <script> would be an
  // element in the list, counted at once below. One more message through both pages
  // first, so anything the evil one set off synchronously has run.
  await say(bob, 'after the evil one');
  await sees(alice, 'after the evil one');
  const xss = await alice.evaluate(() => ({
    flag: /** @type {any} */ (window).__xss ?? null,
    imgs: document.querySelectorAll('#messages img').length,
    scripts: document.querySelectorAll('#messages script').length,
  }));
  if (xss.flag !== null || xss.imgs || xss.scripts) throw new Error(`markup ran: ${JSON.stringify(xss)}`);
  await alice.screenshot({ path: join(SHOTS, 'alice-room.png') });

  step = 'a second room';
  for (const p of [alice, bob]) {
    await p.fill('#join-input', 'side');
    await p.press('#join-input', 'Enter');
    await p.locator('#rooms button[aria-current="true"]', { hasText: '#side' }).waitFor();
  }
  await say(alice, 'in the side room');
  await sees(bob, 'in the side room');

  step = 'a direct message';
  await alice.locator('#peers button', { hasText: 'bob#' }).click();
  await alice.locator('#title', { hasText: '(direct)' }).waitFor();
  await say(alice, 'psst, bob');
  await bob.locator('#directs button', { hasText: 'alice#' }).waitFor();
  await bob.locator('#directs button', { hasText: 'alice#' }).click();
  await sees(bob, 'psst, bob');

  step = 'rename';
  await bob.fill('#nick-input', 'robert');
  await bob.press('#nick-input', 'Enter');
  await bob.locator('#me', { hasText: 'robert#' }).waitFor();
  await alice.locator('#peers button', { hasText: 'robert#' }).waitFor();

  step = 'history after a reload';
  await alice.reload();
  await alice.waitForSelector('#conn.up');
  await alice.locator('#rooms button', { hasText: '#general' }).click();
  await sees(alice, 'hello from alice');
  await sees(alice, 'hi alice, from bob');
  // The direct conversation is listed and read back from the node's store.
  await alice.locator('#directs button', { hasText: 'robert#' }).click();
  await alice.locator('#title', { hasText: '(direct)' }).waitFor();
  await sees(alice, 'psst, bob');

  step = 'the page reconnects after its node restarts';
  console.log('RESTART bob');
  const answer = await lines.next();
  if (answer.value !== 'restarted') throw new Error(`no restart: ${answer.value}`);
  await bob.waitForSelector('#conn.up', { timeout: 20000 });
  await bob.locator('#rooms button', { hasText: '#general' }).click();
  await sees(bob, 'hello from alice');
  await alice.locator('#rooms button', { hasText: '#general' }).click();
  await say(alice, 'welcome back');
  await sees(bob, 'welcome back');

  step = 'share a file by upload, download it in the other page';
  await alice.locator('#rooms button', { hasText: '#general' }).click();
  await bob.locator('#rooms button', { hasText: '#general' }).click();
  const content = Buffer.alloc(300 * 1024);
  for (let i = 0; i < content.length; i++) content[i] = (i * 7919 + (i >> 9)) & 0xff;
  await alice.setInputFiles('#attach', { name: 'notes & v2.txt', mimeType: 'text/plain', buffer: content });
  const card = bob.locator('#messages .offer', { hasText: 'notes & v2.txt' }).first();
  await card.waitFor();
  await card.locator('button').click();
  const save = bob.locator('#transfers .transfer.done a');
  await save.waitFor({ timeout: 30000 });
  const href = await save.getAttribute('href');
  const got = await bob.evaluate(async (href) => {
    const r = await fetch(href);
    return Array.from(new Uint8Array(await r.arrayBuffer()));
  }, href);
  if (got.length !== content.length || got.some((b, i) => b !== content[i])) throw new Error(`downloaded ${got.length} bytes, not the file`);
  await bob.screenshot({ path: join(SHOTS, 'bob-file.png') });

  step = 'phone width';
  await bob.setViewportSize({ width: 390, height: 760 });
  await bob.screenshot({ path: join(SHOTS, 'bob-phone.png') });
  await bob.click('#menu');
  await bob.locator('#side.open').waitFor();

  console.log('PASS');
} catch (e) {
  console.log(`FAIL at ${step}: ${e && e.message ? e.message : e}`);
  let i = 0;
  for (const p of pages) {
    try {
      await p.screenshot({ path: join(SHOTS, `failure-${i++}.png`) });
    } catch {
      // the page may be gone
    }
  }
  process.exitCode = 1;
} finally {
  await browser.close();
  stdin.close();
}
