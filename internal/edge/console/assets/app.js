// microshop console: the storefront and the operator view, in plain
// JavaScript. It calls the gate's HTTP API on its own origin. The member's
// token and the admin key are kept in this script's memory only (never in a
// cookie, in web storage or in a URL — but the chat socket's ?token=, since
// a browser cannot set headers on a WebSocket).
'use strict';

(() => {
  const PAGE = 8;          // goods per page: each card asks for its reactions and ratings
  const FLEET_EVERY = 1000; // ms between polls of the fleet view
  const GONE_KEEP = 120000; // ms a process that left stays shown, struck through

  const state = {
    token: null, userid: null, username: null, // the member logged in
    adminKey: null,
    cursors: [''], page: 0, next: null,        // goods paging: cursors[page] is its after
    myStars: {},                                // goodsid → stars given in this page
    names: {},                                  // goodsid → name, of the goods seen (for the purchases)
    admin: { cursors: [''], page: 0, next: null, goods: new Map(), stores: new Map() }, // the Admin tab's lists
    editGood: null, editStore: null,            // what the edit forms were filled from
    ws: null, room: null,
    procs: new Map(),                           // fleet: "name addr" → {p, state, since, seen}
    fleetTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  // el builds an element; text is always set as text, never as HTML.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  let noticeTimer = null;
  function notice(msg, isError) {
    const n = $('notice');
    n.textContent = msg;
    n.className = 'show' + (isError ? ' error' : '');
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { n.className = ''; n.textContent = ''; }, isError ? 10000 : 5000);
  }

  class APIError extends Error {
    constructor(status, msg) { super(msg); this.status = status; }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // api calls the gate: GET parameters in the query string, others as a
  // JSON body. as: 'member' (the token, if logged in), 'admin' (the admin
  // key) or 'none'. A GET refused with 429 is retried after Retry-After.
  async function api(method, path, params, as = 'member', headers = {}) {
    let url = path;
    const init = { method, headers: { ...headers }, cache: 'no-store', credentials: 'omit' };
    const secret = as === 'admin' ? state.adminKey : as === 'member' ? state.token : null;
    if (secret) init.headers.Authorization = 'Bearer ' + secret;
    if (method === 'GET') {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== '') q.set(k, v);
      const s = q.toString();
      if (s) url += '?' + s;
    } else if (params) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(params);
    }
    // A request that never got an answer (the network changed, the gate
    // restarted) is sent again when doing so cannot apply it twice: reads,
    // deletes, settings (a reaction, a rating), a login, and a purchase,
    // whose Idempotency-Key makes one purchase of any number of tries.
    const again = method !== 'POST' || init.headers['Idempotency-Key'] || ['/reactions', '/ratings', '/sessions'].includes(path);
    for (let attempt = 0, lost = 0; ; attempt++) {
      let res;
      try {
        res = await fetch(url, init);
      } catch (e) {
        if (again && ++lost <= 2) { await sleep(250 * lost); continue; }
        throw new APIError(0, 'the gate cannot be reached: ' + e.message);
      }
      if (res.status === 429 && method === 'GET' && attempt < 3) {
        const after = Math.min(Number(res.headers.get('Retry-After')) || 1, 3);
        await sleep(after * 1000);
        continue;
      }
      let body = null;
      try { body = await res.json(); } catch (e) { body = null; }
      if (!res.ok || (body && body.errorcode)) {
        const msg = (body && body.errormessage) || res.statusText || 'request failed';
        throw new APIError(res.status, `${method} ${path}: ${msg} (${res.status})`);
      }
      return body || {};
    }
  }

  // mine adds the member's userid, which a gate with --auth=off needs
  // (with --auth=on the token decides, and one's own id is accepted).
  const mine = (p) => (state.userid ? { ...p, userid: state.userid } : p);

  function needLogin(what) {
    if (state.token) return false;
    notice(`log in to ${what}`, true);
    $('login-user').focus();
    return true;
  }

  // ---- tabs --------------------------------------------------------------
  function showTab(name) {
    for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === name);
    for (const s of document.querySelectorAll('.tab')) s.classList.toggle('active', s.id === 'tab-' + name);
    if (location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
    if (name === 'rankings') loadRankings();
    if (name === 'admin') { loadAdminGoods(); loadAdminStores(); }
    if (name === 'operator') startFleet(); else stopFleet();
  }

  // ---- account -----------------------------------------------------------
  async function login(ev) {
    ev.preventDefault();
    const username = $('login-user').value.trim(), password = $('login-pass').value;
    try {
      const r = await api('POST', '/sessions', { username, password }, 'none');
      state.token = r.token; state.userid = r.userid; state.username = username;
      $('login-pass').value = '';
      renderAccount();
      notice(`logged in as ${username}`);
      loadGoods(); loadPurchases();
      if (state.ws) joinChat(state.room);
    } catch (e) { notice(e.message, true); }
  }

  async function signup() {
    const username = $('login-user').value.trim(), password = $('login-pass').value;
    if (!username || !password) { notice('type a username and a password (at least 8 characters) first', true); return; }
    try {
      await api('POST', '/members', { username, password }, 'none');
      notice(`account ${username} created; logging in`);
      await login(new Event('submit'));
    } catch (e) { notice(e.message, true); }
  }

  async function logout() {
    try {
      if (state.token) await api('DELETE', '/sessions', null);
    } catch (e) {
      if (e.status !== 401) notice(e.message, true); // 401: the session had already ended
    }
    state.token = state.userid = state.username = null;
    state.myStars = {};
    if (state.ws) leaveChat();
    renderAccount();
    loadGoods(); loadPurchases();
    notice('logged out');
  }

  function renderAccount() {
    const inn = !!state.token;
    $('login-form').hidden = inn;
    $('logged-in').hidden = !inn;
    $('whoami').textContent = inn ? `${state.username} (#${state.userid})` : '';
  }

  // ---- goods -------------------------------------------------------------
  async function loadGoods() {
    const after = state.cursors[state.page];
    let r;
    try {
      r = await api('GET', '/goods', { limit: PAGE, after: after || undefined }, 'none');
    } catch (e) { notice(e.message, true); return; }
    state.next = r.next || null;
    $('goods-prev').disabled = state.page === 0;
    $('goods-next').disabled = !state.next;
    $('goods-page').textContent = `page ${state.page + 1}`;
    const box = $('goods');
    box.replaceChildren();
    const goods = r.results || [];
    if (!goods.length) box.append(el('p', { class: 'muted', text: 'No goods yet. Add some in the Admin tab (with the admin key).' }));
    for (const g of goods) { state.names[g.id] = g.name; box.append(goodCard(g)); }
    await Promise.all(goods.map((g) => Promise.all([loadReactions(g.id), loadRating(g.id)])));
  }

  function goodCard(g) {
    const stars = el('span', { class: 'stars', title: 'rate' });
    for (let n = 1; n <= 5; n++) {
      stars.append(el('button', { type: 'button', 'data-stars': n, 'aria-label': `${n} stars`, text: '★', onclick: () => rate(g.id, n) }));
    }
    return el('div', { class: 'card', 'data-goodsid': g.id },
      el('div', { class: 'title' }, el('span', { class: 'name', text: g.name }), el('span', { class: 'price', text: formatPrice(g.price) })),
      el('div', { class: 'row' }, g.category ? el('span', { class: 'tag', text: g.category }) : null, el('span', { class: 'muted', text: `#${g.id}` })),
      el('div', { class: 'desc', text: g.description || '' }),
      el('div', { class: 'row' }, stars, el('span', { class: 'avg muted', text: '…' }),
        el('button', { type: 'button', class: 'unrate link', hidden: true, title: 'withdraw my rating', onclick: () => unrate(g.id) }, 'withdraw')),
      el('div', { class: 'row' },
        el('button', { type: 'button', class: 'like', title: 'like (again: withdraw)', onclick: () => react(g.id, 'like') }, 'Like ', el('span', { class: 'likes', text: '0' })),
        el('button', { type: 'button', class: 'dislike', title: 'dislike (again: withdraw)', onclick: () => react(g.id, 'dislike') }, 'Dislike ', el('span', { class: 'dislikes', text: '0' })),
        el('span', { class: 'grow' }),
        el('button', { type: 'button', class: 'buy primary', onclick: () => buy(g) }, 'Buy')));
  }

  const formatPrice = (p) => (typeof p === 'number' ? p.toLocaleString('en-US') : String(p ?? ''));
  const card = (id) => document.querySelector(`.card[data-goodsid="${CSS.escape(String(id))}"]`);

  async function loadReactions(id) {
    try {
      const r = await api('GET', '/reactions', mine({ goodsid: id }));
      const c = card(id);
      if (!c) return;
      c.querySelector('.likes').textContent = r.likes ?? 0;
      c.querySelector('.dislikes').textContent = r.dislikes ?? 0;
      c.querySelector('.like').classList.toggle('mine', r.mine === 'like');
      c.querySelector('.dislike').classList.toggle('mine', r.mine === 'dislike');
      c.dataset.mine = r.mine || '';
    } catch (e) { if (e.status !== 404) notice(e.message, true); }
  }

  async function loadRating(id) {
    try {
      const r = await api('GET', '/ratings', { goodsid: id }, 'none');
      const c = card(id);
      if (!c) return;
      const avg = Number(r.average) || 0;
      c.querySelector('.avg').textContent = r.count ? `${avg.toFixed(2)} (${r.count} rating${r.count === 1 ? '' : 's'})` : 'no ratings yet';
      for (const b of c.querySelectorAll('.stars button')) {
        const n = Number(b.dataset.stars);
        b.classList.toggle('on', n <= Math.round(avg));
        b.classList.toggle('minestar', n === state.myStars[id]);
      }
      c.querySelector('.unrate').hidden = !(state.token && state.myStars[id]);
    } catch (e) { if (e.status !== 404) notice(e.message, true); }
  }

  async function react(id, reaction) {
    if (needLogin('like or dislike')) return;
    const c = card(id);
    try {
      if (c && c.dataset.mine === reaction) await api('DELETE', '/reactions', mine({ goodsid: id }));
      else await api('POST', '/reactions', mine({ goodsid: id, reaction }));
    } catch (e) { notice(e.message, true); }
    loadReactions(id);
  }

  async function rate(id, stars) {
    if (needLogin('rate')) return;
    try {
      await api('POST', '/ratings', mine({ goodsid: id, stars }));
      state.myStars[id] = stars;
      notice(`rated good #${id} ${stars} star${stars === 1 ? '' : 's'}`);
    } catch (e) { notice(e.message, true); }
    loadRating(id);
  }

  // unrate withdraws the member's rating of a good. The page knows only
  // the ratings given on it (GET /ratings does not say one's own), so the
  // link shows on those.
  async function unrate(id) {
    if (needLogin('withdraw a rating')) return;
    try {
      await api('DELETE', '/ratings', mine({ goodsid: id }));
      delete state.myStars[id];
      notice(`withdrew your rating of good #${id}`);
    } catch (e) {
      if (e.status === 404) delete state.myStars[id];
      notice(e.status === 404 ? `you have no rating of good #${id} to withdraw` : e.message, true);
    }
    loadRating(id);
  }

  async function buy(g) {
    if (needLogin('buy')) return;
    const key = (crypto.randomUUID && crypto.randomUUID()) || String(Date.now()) + Math.random().toString(16).slice(2);
    try {
      const r = await api('POST', '/purchases', mine({ goodsid: g.id }), 'member', { 'Idempotency-Key': `"${key}"` });
      notice(`bought ${g.name} (purchase #${r.id})`);
    } catch (e) { notice(e.message, true); return; }
    loadPurchases();
    loadRankings();
  }

  async function loadPurchases() {
    const ul = $('purchases');
    if (!state.token) { ul.replaceChildren(el('li', { class: 'muted', text: 'log in to see your purchases' })); return; }
    try {
      const r = await api('GET', '/purchases', mine({ limit: 100 }));
      const rows = r.results || [];
      ul.replaceChildren(...(rows.length ? rows.slice(-20).reverse().map((p) =>
        el('li', { class: 'purchase', 'data-id': p.id, 'data-goodsid': p.goodsid },
          el('span', { text: `#${p.id}: ${goodName(p.goodsid)} on ${new Date(p.date).toLocaleString()}` }),
          el('button', { type: 'button', class: 'cancel', title: 'cancel this purchase', onclick: (ev) => cancelPurchase(p, ev.currentTarget) }, 'Cancel')))
        : [el('li', { class: 'muted', text: 'no purchases yet' })]));
    } catch (e) { notice(e.message, true); }
  }

  const goodName = (id) => (state.names[id] ? `${state.names[id]} (good #${id})` : `good #${id}`);

  // cancelPurchase cancels one of the member's purchases (again: the same
  // answer); it leaves the list and the best sellers.
  async function cancelPurchase(p, button) {
    if (needLogin('cancel a purchase')) return;
    if (button) button.disabled = true;
    try {
      await api('DELETE', '/purchases', mine({ id: p.id }));
      notice(`cancelled purchase #${p.id} of ${goodName(p.goodsid)}`);
    } catch (e) {
      notice(e.status === 404 ? `purchase #${p.id} is not one of yours, or no longer exists` : e.message, true);
      if (button) button.disabled = false;
      if (e.status !== 404) return;
    }
    loadPurchases();
    loadRankings();
  }

  // ---- rankings ------------------------------------------------------------
  async function loadRankings() {
    await Promise.all(['day', 'week', 'all'].map(async (period) => {
      const ol = $('rank-' + period);
      try {
        const r = await api('GET', '/rankings', { top: 10, period }, 'none');
        const rows = r.results || [];
        ol.replaceChildren(...(rows.length ? rows.map((x) =>
          el('li', { 'data-goodsid': x.goodsid }, el('span', { class: 'rname', text: x.name || `good #${x.goodsid}` }),
            el('span', { class: 'sales', text: `${x.sales} sold` })))
          : [el('li', { class: 'muted', text: 'nothing sold yet' })]));
      } catch (e) { ol.replaceChildren(el('li', { class: 'muted', text: e.message })); }
    }));
  }

  // ---- stores --------------------------------------------------------------
  async function searchStores(ev) {
    if (ev) ev.preventDefault();
    const lon = Number($('stores-lon').value), lat = Number($('stores-lat').value), radius = Number($('stores-radius').value);
    let r;
    try {
      r = await api('GET', '/stores', { longitude: lon, latitude: lat, radius, limit: 50 }, 'none');
    } catch (e) { notice(e.message, true); return; }
    const stores = r.results || [];
    const tb = $('stores-table').querySelector('tbody');
    tb.replaceChildren(...(stores.length ? stores.map((s, i) => el('tr', { class: 'store-row' },
      el('td', { text: i + 1 }), el('td', { text: s.name }), el('td', { class: 'num', text: `${Number(s.distance).toFixed(3)} km` }),
      el('td', { class: 'num', text: s.longitude }), el('td', { class: 'num', text: s.latitude })))
      : [el('tr', {}, el('td', { colspan: 5, class: 'muted', text: `no store within ${radius} km` }))]));
    drawStores(lon, lat, radius, stores);
  }

  // drawStores plots the stores around the point: east to the right,
  // north up, the search radius at 180 units (an equirectangular
  // projection, fine at these distances).
  function drawStores(lon, lat, radius, stores) {
    const plot = $('stores-plot');
    const R = 180;
    plot.replaceChildren();
    plot.append(svg('line', { class: 'axis', x1: -R, y1: 0, x2: R, y2: 0 }), svg('line', { class: 'axis', x1: 0, y1: -R, x2: 0, y2: R }));
    for (const f of [0.25, 0.5, 0.75, 1]) {
      plot.append(svg('circle', { class: 'ring', cx: 0, cy: 0, r: R * f }));
      plot.append(svg('text', { class: 'ringlabel', x: R * f * 0.7071 + 2, y: -R * f * 0.7071 - 2 }, `${+(radius * f).toFixed(3)} km`));
    }
    const kx = 111.32 * Math.cos(lat * Math.PI / 180), ky = 110.574;
    // labels right of their dot, moved down past the ones already placed
    // so that stores close together stay readable
    const placed = [{ x: -R, w: 2 * R, y: R + 24 }]; // the point's own label, at the bottom
    const place = (x, y, w) => {
      for (let moved = true, n = 0; moved && n < 40; n++) {
        moved = false;
        for (const p of placed) {
          if (Math.abs(p.y - y) < 12 && x < p.x + p.w && p.x < x + w) { y = p.y + 12; moved = true; }
        }
      }
      placed.push({ x, y, w });
      return y;
    };
    const dots = stores.map((s) => ({ s, x: ((s.longitude - lon) * kx) / radius * R, y: -((s.latitude - lat) * ky) / radius * R }));
    for (const d of dots) {
      plot.append(svg('line', { class: 'link', x1: 0, y1: 0, x2: d.x, y2: d.y }));
      const dot = svg('circle', { class: 'store', cx: d.x, cy: d.y, r: 5 });
      dot.append(svg('title', {}, `${d.s.name}: ${Number(d.s.distance).toFixed(3)} km`));
      plot.append(dot);
    }
    plot.append(svg('circle', { class: 'center', cx: 0, cy: 0, r: 5 }));
    plot.append(svg('text', { x: -R, y: R + 24 }, `● the point: ${lon}, ${lat}`));
    for (const d of [...dots].sort((a, b) => a.y - b.y)) {
      const label = `${d.s.name} · ${Number(d.s.distance).toFixed(2)} km`;
      const ly = place(d.x + 8, d.y + 4, label.length * 6);
      plot.append(svg('text', { x: d.x + 8, y: ly }, label));
    }
    plot.append(svg('text', { x: -R - 15, y: -R + 2 }, 'N ↑   E →'));
  }

  // ---- chat ----------------------------------------------------------------
  function joinChat(room) {
    room = (room || '').trim();
    if (!/^[\p{L}\p{N}_-]{1,64}$/u.test(room)) { notice('a room name is 1 to 64 letters, digits, - and _', true); return; }
    if (state.ws) { state.ws.onclose = null; state.ws.close(1000); state.ws = null; }
    const q = new URLSearchParams({ room });
    if (state.token) { q.set('token', state.token); q.set('userid', state.userid); }
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/chat?' + q.toString();
    const ws = new WebSocket(url);
    state.ws = ws; state.room = room;
    $('chat-log').replaceChildren();
    $('chat-status').textContent = `connecting to ${room}…`;
    ws.onopen = () => {
      $('chat-status').textContent = `in room ${room}` + (state.username ? ` as ${state.username}` : '');
      $('chat-text').disabled = $('chat-send-btn').disabled = $('chat-leave-btn').disabled = false;
      $('chat-text').focus();
    };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.error) { chatLine(el('li', { class: 'err', text: m.error })); return; }
      const me = state.userid && String(m.user) === String(state.userid);
      const who = m.username || (me ? state.username : /^\d+$/.test(String(m.user)) ? `#${m.user}` : String(m.user));
      chatLine(el('li', { class: 'msg' + (me ? ' me' : ''), 'data-id': m.id },
        el('span', { class: 'when', text: m.time ? new Date(m.time).toLocaleTimeString() : '' }),
        el('span', { class: 'who', text: who }), el('span', { class: 'text', text: m.text })));
    };
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      $('chat-text').disabled = $('chat-send-btn').disabled = $('chat-leave-btn').disabled = true;
      const why = ev.code === 4001 ? 'your session ended' : ev.reason || (ev.code === 1006 ? 'refused or lost (log in first?)' : `code ${ev.code}`);
      $('chat-status').textContent = `disconnected: ${why}`;
    };
  }

  function leaveChat() {
    if (!state.ws) return;
    const ws = state.ws;
    state.ws = null;
    ws.onclose = null;
    ws.close(1000);
    $('chat-text').disabled = $('chat-send-btn').disabled = $('chat-leave-btn').disabled = true;
    $('chat-status').textContent = 'not connected';
  }

  function chatLine(li) {
    const log = $('chat-log');
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    log.append(li);
    while (log.children.length > 500) log.firstChild.remove();
    if (atEnd) log.scrollTop = log.scrollHeight;
  }

  function sendChat(ev) {
    ev.preventDefault();
    const t = $('chat-text'), text = t.value.trim();
    if (!text || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
    state.ws.send(JSON.stringify({ text }));
    t.value = '';
  }

  // ---- operator view ----------------------------------------------------------
  function startFleet() {
    if (state.fleetTimer) return;
    const tick = async () => {
      await loadFleet();
      if (state.fleetTimer) state.fleetTimer = setTimeout(tick, FLEET_EVERY);
    };
    state.fleetTimer = setTimeout(tick, 0);
  }
  function stopFleet() { clearTimeout(state.fleetTimer); state.fleetTimer = null; }

  const fmtRate = (v) => (v === undefined || v === null ? '–' : v < 10 ? v.toFixed(2) : v.toFixed(1));
  const fmtP99 = (v) => (v === undefined || v === null ? '–' : v < 0.001 ? `${(v * 1e6).toFixed(0)} µs` : v < 1 ? `${(v * 1000).toFixed(1)} ms` : `${v.toFixed(2)} s`);
  const fmtTime = (t) => new Date(t).toLocaleTimeString();

  async function loadFleet() {
    let f;
    try {
      f = await api('GET', '/console/fleet', null, state.adminKey ? 'admin' : 'member');
    } catch (e) {
      $('fleet-status').textContent = e.message;
      $('fleet-status').className = 'error-text';
      return;
    }
    $('fleet-hint').hidden = !f.auth || !!state.adminKey;
    $('fleet-status').className = 'muted';
    $('fleet-status').textContent = `updated ${fmtTime(f.time)}` + (f.window ? ` · rates over ${f.window.toFixed(1)} s` : '') +
      (f.registry ? '' : ' · no distributor connected: the last list');
    const now = Date.now();
    const seen = new Set();
    for (const p of f.processes) {
      const key = p.name + ' ' + p.addr;
      seen.add(key);
      const old = state.procs.get(key);
      if (!old || old.state !== p.state) state.procs.set(key, { p, state: p.state, since: now });
      else old.p = p;
    }
    for (const [key, v] of state.procs) {
      if (seen.has(key)) continue;
      if (v.state !== 'left') { v.state = 'left'; v.since = now; }
      if (now - v.since > GONE_KEEP) state.procs.delete(key);
    }
    const rows = [...state.procs.values()].sort((a, b) => (a.p.name + a.p.addr).localeCompare(b.p.name + b.p.addr));
    $('fleet-processes').querySelector('tbody').replaceChildren(...rows.map((v) =>
      el('tr', { class: 'proc' + (v.state === 'left' ? ' gone' : ''), 'data-name': v.p.name, 'data-addr': v.p.addr, 'data-state': v.state },
        el('td', { text: v.p.name }), el('td', { text: v.p.addr }),
        el('td', {}, el('span', { class: 'state ' + v.state, text: v.state === 'left' ? 'left the list' : v.state })),
        el('td', { class: 'muted', text: fmtTime(v.since) }),
        el('td', { class: 'routes', text: (v.p.routes || []).join(' ') }))));
    $('fleet-services').querySelector('tbody').replaceChildren(...f.services.map((s) =>
      el('tr', { class: 'svc', 'data-name': s.name },
        el('td', { text: s.name }), el('td', { class: 'num', text: s.name === 'gate' && !s.instances ? '–' : `${s.up} / ${s.instances}` }),
        el('td', { class: 'num rps', text: fmtRate(f.window ? s.rps : null) }), el('td', { class: 'num', text: fmtRate(f.window ? s.errors : null) }),
        el('td', { class: 'num', text: fmtRate(f.window ? s.client : null) }), el('td', { class: 'num', text: fmtP99(s.p99) }),
        el('td', { class: 'num', text: s.total }))));
    $('fleet-routes').querySelector('tbody').replaceChildren(...f.routes.map((r) =>
      el('tr', { class: 'route', 'data-route': r.route },
        el('td', { text: r.route }), el('td', { text: r.service || '–' }),
        el('td', { class: 'num', text: fmtRate(f.window ? r.rps : null) }), el('td', { class: 'num', text: fmtRate(f.window ? r.errors : null) }),
        el('td', { class: 'num', text: fmtRate(f.window ? r.client : null) }), el('td', { class: 'num', text: fmtP99(r.p99) }),
        el('td', { class: 'num', text: r.total }))));
  }

  // ---- admin ----------------------------------------------------------------
  function useKey(ev) {
    ev.preventDefault();
    const k = $('admin-key').value.trim();
    $('admin-key').value = '';
    state.adminKey = k || null;
    $('admin-key-status').textContent = k ? 'key set: kept in this page\'s memory only (reloading forgets it)' : 'no key';
    if (state.fleetTimer) loadFleet();
  }
  function forgetKey() {
    state.adminKey = null;
    $('admin-key').value = '';
    $('admin-key-status').textContent = 'key forgotten';
  }

  // editError says why an edit was not saved, by the answer's status.
  function editError(e, what) {
    const why = {
      0: 'the gate cannot be reached',
      400: 'a value was refused',
      401: 'the admin key is missing or wrong: set it above',
      403: 'the admin key is missing or wrong: set it above',
      404: 'it no longer exists (deleted meanwhile?); the list is reloaded',
      409: 'it was changed meanwhile; the form now holds it as it is, check and save again',
      429: 'too many requests; try again in a moment',
    }[e.status] || 'the gate answered an error';
    return `${what} not saved: ${why} — ${e.message}`;
  }

  // changed returns the fields of now that differ from was.
  function changed(now, was) {
    const c = {};
    for (const [k, v] of Object.entries(now)) if (v !== was[k]) c[k] = v;
    return c;
  }

  async function loadAdminGoods() {
    const a = state.admin;
    let r;
    try {
      r = await api('GET', '/goods', { limit: 50, after: a.cursors[a.page] || undefined }, 'none');
    } catch (e) { notice(e.message, true); return; }
    a.next = r.next || null;
    $('admin-goods-prev').disabled = a.page === 0;
    $('admin-goods-next').disabled = !a.next;
    $('admin-goods-page').textContent = `page ${a.page + 1}`;
    const goods = r.results || [];
    a.goods = new Map(goods.map((g) => [g.id, g]));
    $('admin-goods').querySelector('tbody').replaceChildren(...(goods.length ? goods.map((g) => {
      state.names[g.id] = g.name;
      return el('tr', { class: 'good-row' + (state.editGood && state.editGood.id === g.id ? ' editing' : ''), 'data-id': g.id },
        el('td', { text: g.id }), el('td', { class: 'name', text: g.name }), el('td', { text: g.category || '' }),
        el('td', { class: 'num price', text: formatPrice(g.price) }),
        el('td', {}, el('button', { type: 'button', class: 'edit', onclick: () => editGood(g) }, 'Edit')));
    }) : [el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'no goods yet' }))]));
  }

  // editGood fills the good's edit form with g, as last read.
  function editGood(g) {
    state.editGood = { id: g.id, name: g.name ?? '', category: g.category ?? '', price: g.price ?? 0, description: g.description ?? '' };
    $('good-edit-name').value = state.editGood.name;
    $('good-edit-category').value = state.editGood.category;
    $('good-edit-price').value = state.editGood.price;
    $('good-edit-description').value = state.editGood.description;
    $('good-edit-fields').disabled = false;
    $('good-edit-which').textContent = `#${g.id}`;
    for (const tr of document.querySelectorAll('#admin-goods tr.good-row')) tr.classList.toggle('editing', tr.dataset.id === String(g.id));
    $('good-edit-name').focus();
  }

  function closeGoodEdit() {
    state.editGood = null;
    $('good-edit').reset();
    $('good-edit-fields').disabled = true;
    $('good-edit-which').textContent = '(pick one with its Edit button)';
    for (const tr of document.querySelectorAll('#admin-goods tr.editing')) tr.classList.remove('editing');
  }

  // saveGood sends the fields changed in the form (PATCH /goods): the
  // others are kept, also when someone else changed them meanwhile.
  async function saveGood(ev) {
    ev.preventDefault();
    const was = state.editGood;
    if (!was) return;
    const what = `good #${was.id}`;
    const price = Number($('good-edit-price').value);
    if ($('good-edit-price').value === '' || !Number.isSafeInteger(price) || price < 0) {
      notice(`${what} not saved: the price is a whole number from 0 to 2^53 − 1`, true);
      return;
    }
    const c = changed({ name: $('good-edit-name').value, category: $('good-edit-category').value, price,
      description: $('good-edit-description').value }, was);
    if (!Object.keys(c).length) { notice(`${what}: nothing changed, nothing sent`); return; }
    try {
      const r = await api('PATCH', '/goods', { id: was.id, ...c }, 'admin');
      editGood((r.results || [])[0] || { ...was, ...c });
      notice(`saved ${what}: ${Object.keys(c).join(', ')} changed`);
    } catch (e) {
      notice(editError(e, what), true);
      if (e.status === 404) closeGoodEdit();
      else if (e.status === 409) reloadGood(was.id);
      else return;
    }
    loadAdminGoods();
    loadGoods();
  }

  async function reloadGood(id) {
    try {
      const r = await api('GET', '/goods', { id }, 'none');
      if (r.results && r.results[0]) editGood(r.results[0]);
    } catch (e) { if (e.status === 404) closeGoodEdit(); }
  }

  // loadAdminStores lists the stores near the Admin tab's point: the API
  // finds stores by distance only.
  async function loadAdminStores(ev) {
    if (ev) ev.preventDefault();
    const lon = Number($('admin-stores-lon').value), lat = Number($('admin-stores-lat').value), radius = Number($('admin-stores-radius').value);
    let r;
    try {
      r = await api('GET', '/stores', { longitude: lon, latitude: lat, radius, limit: 100 }, 'none');
    } catch (e) { notice(e.message, true); return; }
    const stores = r.results || [];
    state.admin.stores = new Map(stores.map((st) => [st.id, st]));
    const rows = stores.map((st) => el('tr', { class: 'store-row' + (state.editStore && state.editStore.id === st.id ? ' editing' : ''), 'data-id': st.id },
      el('td', { text: st.id }), el('td', { class: 'name', text: st.name }),
      el('td', { class: 'num lon', text: st.longitude }), el('td', { class: 'num lat', text: st.latitude }),
      el('td', {}, el('button', { type: 'button', class: 'edit', onclick: () => editStore(st) }, 'Edit'))));
    if (!stores.length) rows.push(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: `no store within ${radius} km of the point` })));
    if (stores.length === 100) rows.push(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'the 100 nearest only: move the point or narrow the radius for others' })));
    $('admin-stores').querySelector('tbody').replaceChildren(...rows);
  }

  function editStore(st) {
    state.editStore = { id: st.id, name: st.name ?? '', longitude: Number(st.longitude), latitude: Number(st.latitude) };
    $('store-edit-name').value = state.editStore.name;
    $('store-edit-lon').value = state.editStore.longitude;
    $('store-edit-lat').value = state.editStore.latitude;
    $('store-edit-fields').disabled = false;
    $('store-edit-which').textContent = `#${st.id}`;
    for (const tr of document.querySelectorAll('#admin-stores tr.store-row')) tr.classList.toggle('editing', tr.dataset.id === String(st.id));
    $('store-edit-name').focus();
  }

  function closeStoreEdit() {
    state.editStore = null;
    $('store-edit').reset();
    $('store-edit-fields').disabled = true;
    $('store-edit-which').textContent = '(pick one with its Edit button)';
    for (const tr of document.querySelectorAll('#admin-stores tr.editing')) tr.classList.remove('editing');
  }

  // saveStore sends the fields changed in the form (PATCH /stores). The
  // store's version is the service's own: each write raises it, and Redis
  // takes a write only over a lower one, so edits never undo a newer one.
  async function saveStore(ev) {
    ev.preventDefault();
    const was = state.editStore;
    if (!was) return;
    const what = `store #${was.id}`;
    const lon = $('store-edit-lon').value, lat = $('store-edit-lat').value;
    if (lon === '' || lat === '' || !Number.isFinite(Number(lon)) || !Number.isFinite(Number(lat))) {
      notice(`${what} not saved: give a longitude and a latitude`, true);
      return;
    }
    const c = changed({ name: $('store-edit-name').value, longitude: Number(lon), latitude: Number(lat) }, was);
    if (!Object.keys(c).length) { notice(`${what}: nothing changed, nothing sent`); return; }
    let conflict = false;
    try {
      const r = await api('PATCH', '/stores', { id: was.id, ...c }, 'admin');
      editStore(r.id ? r : { ...was, ...c });
      notice(`saved ${what}: ${Object.keys(c).join(', ')} changed`);
    } catch (e) {
      notice(editError(e, what), true);
      if (e.status === 404) closeStoreEdit();
      else if (e.status === 409) conflict = true;
      else return;
    }
    await loadAdminStores();
    if (conflict && state.admin.stores.has(was.id)) editStore(state.admin.stores.get(was.id));
    if ($('stores-table').querySelector('tr.store-row')) searchStores(); // the Stores tab's search, again
  }

  function adminForm(id, fn) {
    $(id).addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        notice(await fn());
        ev.target.reset();
      } catch (e) { notice(e.message, true); }
    });
  }

  function init() {
    for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));
    $('login-form').addEventListener('submit', login);
    $('signup-btn').addEventListener('click', signup);
    $('logout-btn').addEventListener('click', logout);
    $('goods-prev').addEventListener('click', () => { if (state.page > 0) { state.page--; loadGoods(); } });
    $('goods-next').addEventListener('click', () => {
      if (!state.next) return;
      state.cursors[state.page + 1] = state.next;
      state.page++;
      loadGoods();
    });
    $('goods-refresh').addEventListener('click', () => { loadGoods(); loadPurchases(); });
    $('rankings-refresh').addEventListener('click', loadRankings);
    $('stores-form').addEventListener('submit', searchStores);
    $('chat-join').addEventListener('submit', (ev) => { ev.preventDefault(); joinChat($('chat-room').value); });
    $('chat-leave-btn').addEventListener('click', leaveChat);
    $('chat-send').addEventListener('submit', sendChat);
    $('admin-key-form').addEventListener('submit', useKey);
    $('admin-forget-btn').addEventListener('click', forgetKey);
    adminForm('good-add', async () => {
      const price = Number($('good-price').value);
      const r = await api('POST', '/goods', { name: $('good-name').value.trim(), category: $('good-category').value.trim(),
        price, description: $('good-description').value }, 'admin');
      loadGoods(); loadAdminGoods();
      return `added good #${r.id}`;
    });
    adminForm('store-add', async () => {
      const r = await api('POST', '/stores', { name: $('store-name').value.trim(), longitude: Number($('store-lon').value),
        latitude: Number($('store-lat').value) }, 'admin');
      loadAdminStores();
      return `added store #${r.id}`;
    });
    adminForm('good-delete', async () => {
      const id = Number($('good-delete-id').value);
      await api('DELETE', '/goods', { id }, 'admin');
      loadGoods(); loadAdminGoods();
      return `deleted good #${id}`;
    });
    adminForm('store-delete', async () => {
      const id = Number($('store-delete-id').value);
      await api('DELETE', '/stores', { id }, 'admin');
      loadAdminStores();
      return `deleted store #${id}`;
    });
    $('admin-goods-prev').addEventListener('click', () => { const a = state.admin; if (a.page > 0) { a.page--; loadAdminGoods(); } });
    $('admin-goods-next').addEventListener('click', () => {
      const a = state.admin;
      if (!a.next) return;
      a.cursors[a.page + 1] = a.next;
      a.page++;
      loadAdminGoods();
    });
    $('admin-goods-refresh').addEventListener('click', loadAdminGoods);
    $('good-edit').addEventListener('submit', saveGood);
    $('good-edit-close').addEventListener('click', closeGoodEdit);
    $('admin-stores-form').addEventListener('submit', loadAdminStores);
    $('store-edit').addEventListener('submit', saveStore);
    $('store-edit-close').addEventListener('click', closeStoreEdit);
    renderAccount();
    loadGoods();
    const hash = location.hash.replace(/^#/, '');
    if (hash && $('tab-' + hash)) showTab(hash);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
