// Web UI benchmarks (BENCHMARKS.md): run with
//   cargo build --release -p echo-chat && node chat/tests/web/bench.mjs target/release/echo-chat
// Starts two headless nodes with --web on 127.0.0.1, opens each page in Debian's
// Chromium, and reports (1) send in one page -> shown in the other, p50/p95 over 200
// messages, (2) page load to interactive with 10,000 messages in a room, and the tab's
// JS heap after scrolling through all of them. Everything stops by itself.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BIN = process.argv[2] ?? 'target/release/echo-chat';
const LATENCY_N = Number(process.env.LATENCY_N ?? 200);
const HISTORY_N = Number(process.env.HISTORY_N ?? 10000);
const tmp = mkdtempSync(join(tmpdir(), 'echo-web-bench-'));
const procs = [];

function node(name, extra = []) {
  const p = spawn(BIN, ['--headless', '--json', '--no-mdns', '--name', name, '--data-dir', join(tmp, name),
    '--listen', '/ip4/127.0.0.1/tcp/0', '--web', '127.0.0.1:0', ...extra], { stdio: ['pipe', 'pipe', 'inherit'] });
  procs.push(p);
  const events = [];
  const waiters = [];
  createInterface({ input: p.stdout }).on('line', (l) => {
    const ev = JSON.parse(l);
    events.push(ev);
    for (const w of [...waiters]) if (w.pred(ev)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(ev); }
  });
  const wait = (pred) => {
    const hit = events.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      waiters.push({ pred, resolve });
      setTimeout(() => reject(new Error(`${name}: timed out`)), 120000).unref();
    });
  };
  return { p, wait, send: (line) => p.stdin.write(`${line}\n`) };
}

const pct = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--enable-precise-memory-info',
    '--proxy-server=http://127.0.0.1:9', '--proxy-bypass-list=127.0.0.1;localhost;[::1]',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost, EXCLUDE [::1]'],
});

try {
  const alice = node('alice');
  const a = await alice.wait((e) => e.event === 'web');
  const aReady = await alice.wait((e) => e.event === 'ready');
  const bob = node('bob', ['--connect', aReady.addrs[0]]);
  const b = await bob.wait((e) => e.event === 'web');
  await bob.wait((e) => e.event === 'peer_up');

  const ap = await (await browser.newContext()).newPage();
  const bp = await (await browser.newContext()).newPage();
  await ap.goto(a.url);
  await bp.goto(b.url);
  await ap.waitForSelector('#conn.up');
  await bp.waitForSelector('#conn.up');
  await ap.locator('#rooms button', { hasText: '#general' }).waitFor();
  await bp.locator('#rooms button', { hasText: '#general' }).waitFor();

  // (1) Send -> shown: both pages stamp with the same clock (timeOrigin + now).
  await bp.evaluate(() => {
    const w = /** @type {any} */ (window);
    w.__seen = {};
    new MutationObserver(() => {
      for (const t of document.querySelectorAll('#messages .text')) {
        const m = /^lat (\d+)$/.exec(t.textContent ?? '');
        if (m && !(m[1] in w.__seen)) w.__seen[m[1]] = performance.timeOrigin + performance.now();
      }
    }).observe(document.getElementById('messages'), { childList: true, subtree: true });
  });
  const lat = [];
  for (let i = 0; i < LATENCY_N; i++) {
    const sent = await ap.evaluate((i) => {
      const input = /** @type {HTMLInputElement} */ (document.getElementById('send-input'));
      input.value = `lat ${i}`;
      const t = performance.timeOrigin + performance.now();
      document.getElementById('send-form').requestSubmit();
      return t;
    }, i);
    await bp.waitForFunction((i) => i in /** @type {any} */ (window).__seen, i, { polling: 'raf' });
    const shown = await bp.evaluate((i) => /** @type {any} */ (window).__seen[i], i);
    lat.push(shown - sent);
  }
  console.log(`send -> shown in the other page, ${LATENCY_N} messages: p50 ${pct(lat, 0.5).toFixed(1)} ms, p95 ${pct(lat, 0.95).toFixed(1)} ms`);

  // (2) A room with HISTORY_N messages, stored; then a fresh page load.
  alice.send('/join big');
  await alice.wait((e) => e.event === 'joined' && e.room === 'big');
  for (let i = 0; i < HISTORY_N; i++) alice.send(`/send big history message ${i} with a little text to make it look real`);
  await alice.wait((e) => e.event === 'message' && e.room === 'big' && e.text.startsWith(`history message ${HISTORY_N - 1} `));
  await new Promise((r) => setTimeout(r, 1500)); // the writer commits its batch
  // A new tab in the same browser profile (the link worked once; the cookie stays).
  const page = await ap.context().newPage();
  const t0 = Date.now();
  await page.goto(`http://${a.addr}/`);
  await page.waitForSelector('#conn.up');
  await page.locator('#rooms button', { hasText: '#big' }).click();
  await page.locator('#messages .text', { hasText: `history message ${HISTORY_N - 1} ` }).waitFor();
  const load = Date.now() - t0;
  const nav = await page.evaluate(() => {
    const n = /** @type {PerformanceNavigationTiming} */ (performance.getEntriesByType('navigation')[0]);
    return n ? n.domInteractive : null;
  });
  console.log(`page load -> newest of ${HISTORY_N} messages shown: ${load} ms (DOM interactive at ${nav?.toFixed(0)} ms)`);
  // Scroll to the very beginning.
  const t1 = Date.now();
  for (let i = 0; i < HISTORY_N / 50 + 50; i++) {
    const done = await page.evaluate(() => {
      const l = document.getElementById('messages');
      l.scrollTop = 0;
      l.dispatchEvent(new Event('scroll'));
      return (l.querySelector('.older')?.textContent ?? '') === 'beginning of the room';
    });
    if (done) break;
    await page.waitForTimeout(20);
  }
  const heap = await page.evaluate(() => /** @type {any} */ (performance).memory?.usedJSHeapSize ?? 0);
  const rows = await page.evaluate(() => document.querySelectorAll('#messages .msg').length);
  console.log(`scrolled to the first of ${HISTORY_N} in ${Date.now() - t1} ms: ${rows} rows in the DOM, JS heap ${(heap / 1048576).toFixed(1)} MiB`);
} finally {
  await browser.close();
  for (const p of procs) p.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
}
