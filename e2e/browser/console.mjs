// The browser test of microshop's web console, run by browser_test.go
// against a fleet it started and seeded: Debian's chromium, driven by
// playwright-core. Two members log in on two pages, one buys, likes and
// rates, sees the best sellers change, cancels a purchase and withdraws a
// rating, both chat, the admin edits a good and a store, and the operator
// view sees a goods instance that the Go test kills leave the list.
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

// cardText reads a field (.price, .avg, …) of the card of the good named name.
const cardText = (page, name, field) => page.evaluate(([n, f]) => {
  const c = [...document.querySelectorAll('.card')].find((c) => c.querySelector('.name').textContent === n);
  return c ? c.querySelector(f).textContent : null;
}, [name, field]);

// waitCard waits until a field of the good's card reads want.
const waitCard = (page, name, field, want) => page.waitForFunction(([n, f, w]) => {
  const c = [...document.querySelectorAll('.card')].find((c) => c.querySelector('.name').textContent === n);
  return c && c.querySelector(f).textContent === w;
}, [name, field, want]);

// waitNotice waits until the notice matches re (a RegExp's source), and
// answers its text; error: whether it must be an error notice or must not.
async function waitNotice(page, re, error = false) {
  await page.waitForFunction(([src, err]) => {
    const n = document.querySelector('#notice');
    return new RegExp(src).test(n.textContent) && n.classList.contains('error') === err;
  }, [re.source, error]);
  return page.textContent('#notice');
}

const ranking = (page, period) => page.$$eval(`#rank-${period} li`, (lis) => lis.map((li) => li.textContent).join('|'));

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

  // --- the member cancels a purchase: one sale fewer in the best sellers -------
  await tab(a, 'shop');
  assert.equal(await a.locator('#purchases li.purchase').count(), 3, 'three purchases listed');
  const coffeeId = await card(a, 'black coffee').getAttribute('data-goodsid');
  const mine = a.locator(`#purchases li.purchase[data-goodsid="${coffeeId}"]`);
  assert.equal(await mine.count(), 2, 'two of them black coffee');
  assert.match(await mine.first().textContent(), /black coffee/, 'a purchase names its good');
  const cancelled = await mine.first().getAttribute('data-id');
  await mine.first().locator('button.cancel').click();
  await waitNotice(a, new RegExp(`^cancelled purchase #${cancelled} of black coffee`));
  await a.waitForFunction((id) => document.querySelectorAll('#purchases li.purchase').length === 2 &&
    !document.querySelector(`#purchases li.purchase[data-id="${id}"]`), cancelled);
  // the page refreshes the (hidden) best sellers itself: a tie now, lowest id first
  await a.waitForFunction(() => [...document.querySelectorAll('#rank-all li')].map((l) => l.textContent).join('|') === 'green tea1 sold|black coffee1 sold');
  for (const p of ['day', 'week']) assert.equal(await ranking(a, p), 'green tea1 sold|black coffee1 sold', `the ${p} ranking after the cancel`);
  log(`cancelled purchase #${cancelled}: black coffee down to 1 sold`);

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
  await a.waitForSelector('#purchases button.cancel');
  await shot(a, 'storefront');

  // --- the member withdraws their rating: the average and the count change ------
  assert.ok(await tea.locator('.unrate').isVisible(), 'withdraw shows on the good the member rated');
  assert.ok(!(await coffee.locator('.unrate').isVisible()), 'withdraw does not show on a good the member did not rate');
  await tea.locator('.unrate').click();
  await waitNotice(a, /^withdrew your rating of good #\d+$/);
  await waitCard(a, 'green tea', '.avg', '5.00 (1 rating)');
  assert.ok(!(await tea.locator('.unrate').isVisible()), 'withdraw is gone once withdrawn');
  await b.click('#goods-refresh');
  await waitCard(b, 'green tea', '.avg', '5.00 (1 rating)');
  log('withdrew a rating: 4.50 (2 ratings) became 5.00 (1 rating)');

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
  const added = (await waitNotice(a, /^added good #\d+$/)).replace(/^added good #/, '');
  // the Admin tab lists the goods, the one just added among them
  await a.waitForSelector(`#admin-goods tr.good-row[data-id="${added}"]`);

  // an edit of a good deleted meanwhile is refused with a clear notice
  await a.click(`#admin-goods tr.good-row[data-id="${added}"] button.edit`);
  await a.fill('#good-delete-id', added);
  await a.click('#good-delete button[type="submit"]');
  await waitNotice(a, new RegExp(`^deleted good #${added}$`));
  await a.waitForFunction((id) => !document.querySelector(`#admin-goods tr.good-row[data-id="${id}"]`), added);
  await a.fill('#good-edit-price', '1');
  await a.click('#good-edit-save');
  await waitNotice(a, new RegExp(`^good #${added} not saved: it no longer exists .*\\(404\\)$`), true);
  assert.ok(await a.locator('#good-edit-save').isDisabled(), 'the edit form closes on a good that is gone');
  assert.equal(await a.inputValue('#good-edit-name'), '', 'and is emptied');

  // --- admin: edit a good; the storefront shows it ----------------------------------
  const teaRow = a.locator('#admin-goods tr.good-row', { has: a.locator('td.name', { hasText: /^green tea$/ }) });
  await teaRow.locator('button.edit').click();
  assert.equal(await a.inputValue('#good-edit-name'), 'green tea', 'Edit fills the form');
  assert.equal(await a.inputValue('#good-edit-price'), '1000');
  await a.fill('#good-edit-price', '2800');
  await a.fill('#good-edit-description', 'from Jeju, first flush');
  await a.click('#good-edit-save');
  await waitNotice(a, /^saved good #\d+: price, description changed$/);
  await a.waitForFunction(() => {
    const tr = [...document.querySelectorAll('#admin-goods tr.good-row')].find((t) => t.querySelector('td.name').textContent === 'green tea');
    return tr && tr.querySelector('td.price').textContent === '2,800';
  });
  await waitCard(a, 'green tea', '.price', '2,800');
  assert.equal(await cardText(a, 'green tea', '.desc'), 'from Jeju, first flush');
  // the form now holds the good as saved: saving again sends nothing
  await a.click('#good-edit-save');
  await waitNotice(a, /^good #\d+: nothing changed, nothing sent$/);
  // the other member's page, on whichever goods instance answers it
  await tab(b, 'shop');
  await b.click('#goods-refresh');
  await waitCard(b, 'green tea', '.price', '2,800');
  await waitCard(b, 'green tea', '.desc', 'from Jeju, first flush');
  log('edited a good: green tea costs 2,800 on both pages');

  // --- admin: edit a store; the store search shows it -----------------------------
  await a.waitForFunction(() => [...document.querySelectorAll('#admin-stores tr.store-row td.name')].map((t) => t.textContent).join('|') === 'City Hall|Myeongdong|Gangnam');
  await a.click('#admin-stores tr.store-row:nth-child(3) button.edit');
  assert.equal(await a.inputValue('#store-edit-name'), 'Gangnam');
  await a.fill('#store-edit-name', 'Gangnam Station');
  await a.fill('#store-edit-lat', '37.4981');
  if (AUTH) {
    // without the key the edit is refused, and the page says why
    await a.click('#admin-forget-btn');
    await a.click('#store-edit-save');
    await waitNotice(a, /^store #\d+ not saved: the admin key is missing or wrong: set it above .*\(401\)$/, true);
    await a.fill('#admin-key', ADMIN);
    await a.click('#admin-key-btn');
  }
  await a.click('#store-edit-save');
  await waitNotice(a, /^saved store #\d+: name, latitude changed$/);
  await a.waitForFunction(() => {
    const tr = document.querySelector('#admin-stores tr.store-row:nth-child(3)');
    return tr && tr.querySelector('td.name').textContent === 'Gangnam Station' && tr.querySelector('td.lat').textContent === '37.4981';
  });
  // the Stores tab searched before: the page searches again
  await a.waitForFunction(() => [...document.querySelectorAll('#stores-table tr.store-row td:nth-child(2)')].map((t) => t.textContent).join('|') === 'City Hall|Myeongdong|Gangnam Station');
  log('edited a store: Gangnam is Gangnam Station, moved north');
  await shot(a, 'admin');
  await tab(a, 'stores');
  await a.click('#stores-form button[type="submit"]');
  await a.waitForFunction(() => [...document.querySelectorAll('#stores-plot text')].some((t) => t.textContent.startsWith('Gangnam Station · ')));
  assert.equal(await a.$$eval('#stores-table tr.store-row td:nth-child(2)', (tds) => tds.map((t) => t.textContent).join('|')), 'City Hall|Myeongdong|Gangnam Station');

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
