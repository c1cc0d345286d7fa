// The browser test of microshop's web console, run by browser_test.go
// against a fleet it started and seeded: Debian's chromium, driven by
// playwright-core. Two members log in on two pages, one buys, likes and
// rates, sees the best sellers change, both chat, and the operator view
// sees a goods instance that the Go test kills leave the list.
//
// Environment: MICROSHOP_BASE (the gate's URL), MICROSHOP_AUTH (on|off),
// MICROSHOP_ADMIN (the admin key, with auth on), MICROSHOP_USER1,
// MICROSHOP_USER2, MICROSHOP_PASSWORD, MICROSHOP_SCREENSHOTS (a folder),
// MICROSHOP_CHROMIUM (default /usr/bin/chromium).
//
// Protocol with the Go test: this script prints "KILL goods" on stdout
// and reads one line "killed HOST:PORT" on stdin, the instance the test
// killed. Every other line it prints is a log line.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env('MICROSHOP_BASE');
const AUTH = env('MICROSHOP_AUTH', 'on') === 'on';
const ADMIN = AUTH ? env('MICROSHOP_ADMIN') : '';
const USER1 = env('MICROSHOP_USER1'), USER2 = env('MICROSHOP_USER2'), PASSWORD = env('MICROSHOP_PASSWORD');
const SHOTS = env('MICROSHOP_SCREENSHOTS');
const suffix = AUTH ? '' : '-auth-off';
mkdirSync(SHOTS, { recursive: true });

const log = (...a) => console.log('[browser]', ...a);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

const secrets = new Set(ADMIN ? [ADMIN] : []); // tokens are added as members log in
const problems = [];

function watch(page, name) {
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') log(`${name} console error: ${m.text()}`); });
  page.on('request', (r) => {
    const url = r.url();
    for (const s of secrets) {
      if (url.includes(encodeURIComponent(s)) || url.includes(s)) {
        // the chat socket's ?token= is the one place a token may appear
        const u = new URL(url);
        if (!(u.pathname === '/chat' && u.protocol.startsWith('ws') && s !== ADMIN)) problems.push(`${name}: a secret in a URL: ${u.pathname}`);
      }
    }
  });
  page.on('websocket', (ws) => {
    const u = new URL(ws.url());
    if (ADMIN && ws.url().includes(ADMIN)) problems.push(`${name}: the admin key in a socket's URL`);
    if (u.pathname !== '/chat') problems.push(`${name}: an unexpected socket ${u.pathname}`);
  });
}

async function shot(page, name) {
  const file = join(SHOTS, `${name}${suffix}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log('screenshot', file);
}

async function tab(page, name) {
  await page.click(`#tabs button[data-tab="${name}"]`);
  await page.waitForSelector(`#tab-${name}.active`);
}

async function login(page, user) {
  await page.fill('#login-user', user);
  await page.fill('#login-pass', PASSWORD);
  await page.click('#login-btn');
  await page.waitForSelector('#logged-in:not([hidden])');
  const who = await page.textContent('#whoami');
  assert.match(who, new RegExp(`^${user} \\(#\\d+\\)$`));
  // the token, read from what the page sent, to check it never shows in a URL
  return who;
}

const card = (page, name) => page.locator('.card', { has: page.locator('.name', { hasText: name }) }).first();

async function buy(page, name) {
  const c = card(page, name);
  const before = await page.locator('#purchases li.purchase').count();
  await c.locator('.buy').click();
  await page.waitForFunction(([n]) => document.querySelectorAll('#purchases li.purchase').length > n, [before]);
}

async function rankingOf(page, period) {
  return page.$$eval(`#rank-${period} li`, (lis) => lis.map((li) => li.textContent));
}

const browser = await chromium.launch({
  executablePath: env('MICROSHOP_CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const ctxA = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const ctxB = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  ctxA.on('response', async (r) => {
    if (r.url().endsWith('/sessions') && r.request().method() === 'POST') {
      try { const b = await r.json(); if (b.token) secrets.add(b.token); } catch { /* not JSON */ }
    }
  });
  ctxB.on('response', async (r) => {
    if (r.url().endsWith('/sessions') && r.request().method() === 'POST') {
      try { const b = await r.json(); if (b.token) secrets.add(b.token); } catch { /* not JSON */ }
    }
  });
  const a = await ctxA.newPage(), b = await ctxB.newPage();
  watch(a, 'page A'); watch(b, 'page B');

  // --- the storefront: goods in pages -----------------------------------
  await a.goto(BASE + '/');
  await a.waitForSelector('.card');
  assert.equal(await a.locator('.card').count(), 8, 'a page holds 8 goods');
  await a.waitForSelector('#goods-next:not([disabled])');
  const first = await a.locator('.card .name').first().textContent();
  await a.click('#goods-next');
  await a.waitForFunction((f) => document.querySelector('.card .name') && document.querySelector('.card .name').textContent !== f, first);
  assert.equal(await a.textContent('#goods-page'), 'page 2');
  await a.click('#goods-prev');
  await a.waitForFunction((f) => document.querySelector('.card .name') && document.querySelector('.card .name').textContent === f, first);
  log('paging ok: first good', first);

  // the rankings before anything is sold
  await tab(a, 'rankings');
  await a.waitForSelector('#rank-all li');
  assert.deepEqual(await rankingOf(a, 'all'), ['nothing sold yet']);

  // --- log in, buy, like, rate ----------------------------------------------
  await tab(a, 'shop');
  await login(a, USER1);
  await buy(a, 'green tea');
  await tab(a, 'rankings');
  await a.waitForFunction(() => (document.querySelector('#rank-all li') || {}).textContent === 'green tea1 sold');
  await tab(a, 'shop');
  await buy(a, 'black coffee');
  await buy(a, 'black coffee');
  await tab(a, 'rankings');
  await a.waitForFunction(() => [...document.querySelectorAll('#rank-all li')].map((l) => l.textContent).join('|') === 'black coffee2 sold|green tea1 sold');
  for (const p of ['day', 'week']) {
    assert.deepEqual(await rankingOf(a, p), ['black coffee2 sold', 'green tea1 sold'], `the ${p} ranking`);
  }
  log('ranking changed: black coffee overtook green tea');
  await shot(a, 'rankings');

  await tab(a, 'shop');
  const tea = card(a, 'green tea');
  await tea.locator('.like').click();
  await a.waitForFunction(() => {
    const c = [...document.querySelectorAll('.card')].find((c) => c.querySelector('.name').textContent === 'green tea');
    return c && c.querySelector('.likes').textContent === '1' && c.querySelector('.like').classList.contains('mine');
  });
  const coffee = card(a, 'black coffee');
  await coffee.locator('.dislike').click();
  await a.waitForFunction(() => {
    const c = [...document.querySelectorAll('.card')].find((c) => c.querySelector('.name').textContent === 'black coffee');
    return c && c.querySelector('.dislikes').textContent === '1';
  });
  await tea.locator('.stars button[data-stars="4"]').click();
  await a.waitForFunction(() => {
    const c = [...document.querySelectorAll('.card')].find((c) => c.querySelector('.name').textContent === 'green tea');
    return c && c.querySelector('.avg').textContent === '4.00 (1 rating)';
  });
  log('liked, disliked, rated');

  // a second member rates too: the average moves
  await b.goto(BASE + '/');
  await b.waitForSelector('.card');
  await login(b, USER2);
  await card(b, 'green tea').locator('.stars button[data-stars="5"]').click();
  await b.waitForFunction(() => {
    const c = [...document.querySelectorAll('.card')].find((c) => c.querySelector('.name').textContent === 'green tea');
    return c && c.querySelector('.avg').textContent === '4.50 (2 ratings)';
  });
  await a.click('#goods-refresh');
  await a.waitForFunction(() => {
    const c = [...document.querySelectorAll('.card')].find((c) => c.querySelector('.name').textContent === 'green tea');
    return c && c.querySelector('.avg').textContent === '4.50 (2 ratings)';
  });
  await shot(a, 'storefront');

  // --- stores near a point ------------------------------------------------------
  await tab(a, 'stores');
  await a.fill('#stores-radius', '15');
  await a.click('#stores-form button[type="submit"]');
  await a.waitForSelector('#stores-table tr.store-row');
  const stores = await a.$$eval('#stores-table tr.store-row td:nth-child(2)', (tds) => tds.map((t) => t.textContent));
  assert.deepEqual(stores, ['City Hall', 'Myeongdong', 'Gangnam'], 'stores nearest first');
  assert.equal(await a.locator('#stores-plot circle.store').count(), 3);
  await shot(a, 'stores');

  // --- chat between two pages ----------------------------------------------------
  const room = 'e2e-room';
  for (const p of [a, b]) {
    await tab(p, 'chat');
    await p.fill('#chat-room', room);
    await p.click('#chat-join-btn');
    await p.waitForSelector('#chat-text:not([disabled])');
  }
  await a.fill('#chat-text', 'hello from the first page');
  await a.press('#chat-text', 'Enter');
  await b.waitForSelector('#chat-log li.msg >> text=hello from the first page');
  await b.fill('#chat-text', 'and hello back');
  await b.click('#chat-send-btn');
  await a.waitForSelector('#chat-log li.msg >> text=and hello back');
  assert.equal(await a.locator('#chat-log li.msg.me').count(), 1, 'page A marks its own message');
  log('chat ok between two pages');
  await shot(a, 'chat');
  await shot(b, 'chat-second-page');

  // --- admin: a good added from the page -------------------------------------------
  await tab(a, 'admin');
  if (AUTH) {
    await a.fill('#admin-key', ADMIN);
    await a.click('#admin-key-btn');
    assert.equal(await a.inputValue('#admin-key'), '', 'the key field is cleared once the key is taken');
  }
  await a.fill('#good-name', 'added from the console');
  await a.fill('#good-category', 'ui');
  await a.fill('#good-price', '1234');
  await a.fill('#good-description', 'made by the browser test');
  await a.click('#good-add button[type="submit"]');
  await a.waitForFunction(() => /^added good #\d+$/.test(document.querySelector('#notice').textContent));
  await shot(a, 'admin');

  // --- operator view: a killed goods instance leaves --------------------------------
  const c = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const op = await c.newPage();
  watch(op, 'operator page');
  await op.goto(BASE + '/#operator');
  if (AUTH) {
    // without the key the fleet view says what it needs
    await op.waitForFunction(() => /admin key/.test(document.querySelector('#fleet-status').textContent));
    await tab(op, 'admin');
    await op.fill('#admin-key', ADMIN);
    await op.click('#admin-key-btn');
    await tab(op, 'operator');
  }
  await op.waitForFunction(() => document.querySelectorAll('#fleet-processes tr.proc[data-name="goods"][data-state="up"]').length === 2);
  // live figures: the page's own polls are answered at a rate
  await op.waitForFunction(() => {
    const r = document.querySelector('#fleet-routes tr.route[data-route="GET /console/fleet"] td:nth-child(3)');
    return r && Number(r.textContent) > 0;
  });
  // the storefront's traffic shows as goods' requests a second
  const goodsBusy = () => op.waitForFunction(() => {
    const td = document.querySelector('#fleet-services tr.svc[data-name="goods"] td:nth-child(3)');
    return td && Number(td.textContent) > 0;
  });
  await tab(a, 'shop');
  await a.click('#goods-refresh');
  await goodsBusy();
  const procs = await op.$$eval('#fleet-processes tr.proc', (trs) => trs.map((t) => t.dataset.name));
  for (const want of ['chat', 'gate', 'goods', 'members', 'purchases', 'ratings', 'reactions', 'stores']) {
    assert.ok(procs.includes(want), `the operator view lists ${want}: ${procs}`);
  }
  await shot(op, 'operator');

  console.log('KILL goods');
  const killed = (await nextLine()).replace(/^killed /, '').trim();
  log('the test killed the goods instance at', killed);
  const t0 = Date.now();
  await op.waitForFunction((addr) => {
    const tr = document.querySelector(`#fleet-processes tr.proc[data-name="goods"][data-addr="${addr}"]`);
    return tr && (tr.dataset.state === 'left' || tr.dataset.state === 'down');
  }, killed, { timeout: 10000 });
  await op.waitForFunction((addr) => {
    const tr = document.querySelector(`#fleet-processes tr.proc[data-name="goods"][data-addr="${addr}"]`);
    return tr && tr.dataset.state === 'left';
  }, killed, { timeout: 10000 });
  log(`the killed instance left the operator view after ${Date.now() - t0} ms`);
  assert.equal(await op.locator('#fleet-processes tr.proc[data-name="goods"][data-state="up"]').count(), 1, 'one goods instance is still up');
  await op.waitForFunction(() => {
    const td = document.querySelector('#fleet-services tr.svc[data-name="goods"] td:nth-child(2)');
    return td && td.textContent === '1 / 1';
  });
  // the shop still works on the other instance, and the view shows it
  await a.click('#goods-next');
  await a.waitForFunction(() => document.querySelector('#goods-page').textContent === 'page 2');
  await a.waitForSelector('.card');
  await goodsBusy();
  await shot(op, 'operator-instance-killed');

  // --- log out ----------------------------------------------------------------------
  await a.click('#logout-btn');
  await a.waitForSelector('#login-form:not([hidden])');
  for (const [name, ctx, p] of [['A', ctxA, a], ['B', ctxB, b], ['operator', c, op]]) {
    assert.deepEqual(await ctx.cookies(), [], `page ${name} set no cookie`);
    assert.equal(await p.evaluate(() => localStorage.length + sessionStorage.length), 0, `page ${name} stored nothing`);
  }
  if (problems.length) throw new Error(problems.join('\n'));
  log('all browser checks passed');
} finally {
  await browser.close();
  lines.close();
}
