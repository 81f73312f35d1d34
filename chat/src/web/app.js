// echo's web UI: one WebSocket to the node, carrying the `--json` schema (chat/JSON.md):
// events in, command lines out. Peer text is only ever set with textContent.
// @ts-check

/** @typedef {{id: string, hash: string, name: string, size: number, mime: string}} Offer */
/** @typedef {{room?: string, author: string, name: string, display: string, seq?: number,
 *   lamport?: number, sent_at_ms: number, text: string, own: boolean, key: string,
 *   mention?: boolean, offer?: Offer|null}} Msg */
/** @typedef {{id: number, offer: Offer, done: number, sources: number, rate: number|null,
 *   state: string, detail: string}} Transfer */
/** @typedef {{id: string, kind: 'room'|'direct', messages: Msg[], keys: Set<string>,
 *   unread: number, members: Set<string>, complete: boolean, loading: boolean,
 *   shown: number, end: number, stored?: boolean, asked?: boolean}} View */

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

const state = {
  me: { peer_id: '', name: '', display: '', addrs: /** @type {string[]} */ ([]) },
  /** @type {Map<string, View>} room name or peer id -> view */
  views: new Map(),
  /** @type {Map<string, {name: string, display: string, online: boolean, rtt_ms: number|null}>} */
  peers: new Map(),
  /** @type {string|null} view id */
  current: null,
  /** @type {Map<number, Transfer>} downloads of this run */
  transfers: new Map(),
  connected: false,
};

/** Messages a page of history holds. */
const PAGE = 100;
/** Messages kept per view in the page (older ones are fetched again when scrolled to). */
const KEEP = 20000;
/** Messages drawn at first, and at most: the DOM holds a window of the view's messages
 * that slides as the user scrolls, so 10,000 messages cost no more to draw than 600. */
const SHOWN = 200;
const WINDOW = 600;
/** Each message's row, built once. */
const rows = new WeakMap();

/** @type {WebSocket|null} */
let ws = null;
let backoff = 500;

function send(/** @type {string} */ line) {
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(line);
    return true;
  }
  notice('not connected to the node; retrying…', true);
  return false;
}

function connect() {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  const sock = new WebSocket(url);
  ws = sock;
  sock.onopen = () => {
    backoff = 500;
    state.connected = true;
    setConn();
    send('/state');
  };
  sock.onmessage = (e) => {
    let ev;
    try {
      ev = JSON.parse(e.data);
    } catch {
      return;
    }
    try {
      handle(ev);
    } catch (err) {
      console.error('event', ev, err);
    }
  };
  sock.onclose = () => {
    state.connected = false;
    setConn();
    if (ws === sock) {
      ws = null;
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 8000);
    }
  };
}

function setConn() {
  const c = $('conn');
  c.textContent = state.connected ? 'connected' : 'reconnecting…';
  c.classList.toggle('up', state.connected);
}

/** @returns {View} */
function view(/** @type {string} */ id, /** @type {'room'|'direct'} */ kind) {
  let v = state.views.get(id);
  if (!v) {
    v = { id, kind, messages: [], keys: new Set(), unread: 0, members: new Set(), complete: kind === 'direct', loading: false, shown: SHOWN, end: 0 };
    state.views.set(id, v);
  }
  return v;
}

function cmp(/** @type {Msg} */ a, /** @type {Msg} */ b) {
  // The room's agreed order: lamport, then author (base58 of equal length sorts as its
  // bytes), then seq. Direct messages: by time.
  if (a.lamport !== undefined && b.lamport !== undefined) {
    if (a.lamport !== b.lamport) return a.lamport - b.lamport;
    if (a.author !== b.author) return a.author < b.author ? -1 : 1;
    return (a.seq ?? 0) - (b.seq ?? 0);
  }
  return a.sent_at_ms - b.sent_at_ms;
}

function mentionsMe(/** @type {string} */ text) {
  const n = state.me.name.toLowerCase();
  const d = state.me.display.toLowerCase();
  if (!n) return false;
  return text.split(/\s+/).some((w) => {
    if (!w.startsWith('@')) return false;
    const x = w.slice(1).replace(/[.,!?;:)]+$/, '').toLowerCase();
    return x === n || x === d;
  });
}

/** Adds messages to a view in order; returns how many were new. */
function add(/** @type {View} */ v, /** @type {Msg[]} */ msgs) {
  let n = 0;
  for (const m of msgs) {
    if (v.keys.has(m.key)) continue;
    v.keys.add(m.key);
    m.mention = !m.own && mentionsMe(m.text);
    const at = upper(v.messages, m);
    v.messages.splice(at, 0, m);
    n++;
  }
  while (v.messages.length > KEEP) {
    const gone = /** @type {Msg} */ (v.messages.shift());
    v.keys.delete(gone.key);
    v.complete = false;
  }
  return n;
}

function upper(/** @type {Msg[]} */ arr, /** @type {Msg} */ m) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cmp(arr[mid], m) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function roomMsg(/** @type {any} */ e) {
  return /** @type {Msg} */ ({
    room: e.room, author: e.author, name: e.name, display: e.display, seq: e.seq,
    lamport: e.lamport, sent_at_ms: e.sent_at_ms, text: e.text, own: !!e.own,
    key: `${e.lamport}:${e.seq}:${e.author}`, offer: e.offer ?? null,
  });
}

let directSeq = 0;

/** One key per direct message whether it came live or from the stored history: its
 * number in the conversation (encrypted ones), else the stored row, else a counter. */
function directKey(/** @type {boolean} */ own, /** @type {number|null|undefined} */ seq, /** @type {number|undefined} */ row = undefined) {
  if (seq !== null && seq !== undefined) return `${own ? 'o' : 'i'}${seq}`;
  return row !== undefined ? `r${row}` : `d${directSeq++}`;
}
/** Rooms this tab asked to join (it switches to them when joined). */
const joining = new Set();

function handle(/** @type {any} */ e) {
  switch (e.event) {
    case 'state': {
      state.me = { peer_id: e.peer_id, name: e.name, display: e.display, addrs: e.addrs || [] };
      $('me').textContent = e.display;
      /** @type {HTMLInputElement} */ ($('nick-input')).placeholder = e.name;
      const rooms = new Set();
      for (const r of e.rooms) {
        rooms.add(r.room);
        const v = view(r.room, 'room');
        v.members = new Set(r.members);
        if (v.messages.length === 0) loadOlder(v);
      }
      for (const [id, v] of state.views) if (v.kind === 'room' && !rooms.has(id)) state.views.delete(id);
      for (const d of e.directs) view(d, 'direct');
      // Stored conversations come back with their unread counts.
      for (const c of e.conversations || []) {
        const v = view(c.peer, 'direct');
        v.stored = true;
        if (v.messages.length === 0) v.unread = c.unread;
      }
      state.peers.clear();
      for (const p of e.peers) state.peers.set(p.peer, p);
      if (!state.current || !state.views.has(state.current)) {
        state.current = e.current ?? (e.rooms[0] ? e.rooms[0].room : null);
      }
      const open = state.current ? state.views.get(state.current) : undefined;
      if (open) askHistory(open);
      render();
      break;
    }
    case 'history': {
      const v = view(e.room, 'room');
      v.loading = false;
      v.complete = !!e.complete;
      const list = $('messages');
      const before = list.scrollHeight - list.scrollTop;
      if (add(v, e.messages.map(roomMsg)) > 0 && state.current === e.room && $('messages').scrollTop < 80) older(v);
      render();
      if (state.current === e.room) list.scrollTop = list.scrollHeight - before;
      break;
    }
    case 'message': {
      const v = view(e.room, 'room');
      const m = roomMsg(e);
      if (add(v, [m]) && !m.own && !e.restored) arrived(v, m);
      render();
      break;
    }
    case 'direct': {
      const v = view(e.from, 'direct');
      const m = { author: e.from, name: e.name, display: e.display, sent_at_ms: e.sent_at_ms, text: e.text, own: false, key: directKey(false, e.seq), offer: e.offer ?? null };
      if (add(v, [m])) arrived(v, m, true);
      if (state.current === e.from && !document.hidden) send(`/read ${e.from}`);
      render();
      break;
    }
    case 'direct_sent': {
      const v = view(e.to, 'direct');
      add(v, [{ author: state.me.peer_id, name: state.me.name, display: state.me.display, sent_at_ms: Date.now(), text: e.text, own: true, key: directKey(true, e.seq) }]);
      render();
      break;
    }
    case 'direct_history': {
      // The stored conversation (asked for when it is first opened): a reload or a
      // restart shows what was said before.
      const v = view(e.peer, 'direct');
      add(v, e.messages.map((/** @type {any} */ m) => /** @type {Msg} */ ({
        author: m.author, name: m.name, display: m.own ? state.me.display : `${m.name}#${String(m.author).slice(-4)}`,
        sent_at_ms: m.sent_at_ms, text: m.text, own: m.own, key: directKey(m.own, m.seq, m.id),
      })));
      render();
      if (state.current === e.peer) $('messages').scrollTop = $('messages').scrollHeight;
      break;
    }
    case 'joined':
    case 'switched': {
      // Another tab or the terminal may have joined: follow only our own joins.
      const v = view(e.room, 'room');
      if (joining.delete(e.room) || !state.current) state.current = e.room;
      if (v.messages.length === 0) loadOlder(v);
      render();
      break;
    }
    case 'left':
      state.views.delete(e.room);
      if (state.current === e.room) state.current = firstRoom();
      render();
      break;
    case 'member_joined':
    case 'member_left': {
      const v = state.views.get(e.room);
      if (v) {
        if (e.event === 'member_joined') v.members.add(e.peer);
        else v.members.delete(e.peer);
      }
      render();
      break;
    }
    case 'peer_up':
      state.peers.set(e.peer, { name: e.name, display: e.display, online: true, rtt_ms: null });
      render();
      break;
    case 'peer_down': {
      const p = state.peers.get(e.peer);
      if (p) p.online = false;
      render();
      break;
    }
    case 'rtt': {
      const p = state.peers.get(e.peer);
      if (p) {
        p.rtt_ms = e.rtt_ms;
        renderPeers();
      }
      break;
    }
    case 'name_changed': {
      const p = state.peers.get(e.peer);
      if (p) {
        p.name = e.new;
        p.display = `${e.new}#${e.peer.slice(-4)}`;
      }
      render();
      break;
    }
    case 'nick':
      state.me.name = e.name;
      state.me.display = e.display;
      $('me').textContent = e.display;
      notice(`you are now ${e.display}`);
      break;
    case 'error':
      notice(e.text, true);
      break;
    case 'info':
      notice(e.text);
      break;
    case 'transfer_started':
      state.transfers.set(e.transfer, { id: e.transfer, offer: e.offer, done: 0, sources: 0, rate: null, state: 'running', detail: '' });
      renderTransfers();
      break;
    case 'transfer_progress': {
      const t = state.transfers.get(e.transfer);
      if (t) {
        t.done = e.done;
        t.sources = e.sources;
        t.rate = e.rate_bps;
        renderTransfers();
      }
      break;
    }
    case 'transfer_done':
    case 'transfer_failed':
    case 'transfer_cancelled': {
      const t = state.transfers.get(e.transfer);
      if (t) {
        t.state = e.event.slice('transfer_'.length);
        t.detail = e.path ?? e.reason ?? '';
        if (t.state === 'done') t.done = t.offer.size;
        renderTransfers();
      }
      break;
    }
    case 'dial_failed':
      if (e.requested) notice(`cannot connect: ${e.error ?? e.reason ?? 'failed'}`, true);
      break;
    default:
      break;
  }
}

function firstRoom() {
  for (const [id, v] of state.views) if (v.kind === 'room') return id;
  return null;
}

function arrived(/** @type {View} */ v, /** @type {Msg} */ m, direct = false) {
  if (state.current !== v.id || document.hidden) v.unread++;
  if (document.hidden && (direct || m.mention)) notifyUser(m, direct);
}

function notifyUser(/** @type {Msg} */ m, /** @type {boolean} */ direct) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  const title = direct ? `${m.display} (direct)` : `${m.display} in #${m.room}`;
  try {
    new Notification(title, { body: m.text.slice(0, 200) });
  } catch {
    // Some platforms only allow notifications from a service worker.
  }
}

/** Moves the window towards older messages held; false when none are held. */
function older(/** @type {View} */ v) {
  const to = v.messages.length - v.end;
  if (to - v.shown <= 0) return false;
  if (v.shown < WINDOW) v.shown = Math.min(WINDOW, v.shown + PAGE);
  else v.end = Math.min(v.messages.length - v.shown, v.end + PAGE);
  return true;
}

/** Scrolled to the top: draw older messages held, else fetch an older page. */
function showOlder(/** @type {View} */ v) {
  if (older(v)) renderMessages();
  else loadOlder(v);
}

/** Scrolled to the bottom of a window that does not reach the newest: slide back. */
function showNewer(/** @type {View} */ v) {
  if (v.end === 0) return;
  v.end = Math.max(0, v.end - PAGE);
  renderMessages();
}

function loadOlder(/** @type {View} */ v) {
  if (v.kind !== 'room' || v.complete || v.loading) return;
  v.loading = true;
  const oldest = v.messages[0];
  const key = oldest ? ` ${oldest.key}` : '';
  if (!send(`/history ${v.id}${key} ${PAGE}`)) v.loading = false;
}

function el(/** @type {string} */ tag, /** @type {string} */ cls = '', /** @type {string} */ text = '') {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

function label(/** @type {View} */ v) {
  if (v.kind === 'room') return `#${v.id}`;
  const p = state.peers.get(v.id);
  return `@${p ? p.display : v.id.slice(-8)}`;
}

function render() {
  renderList();
  renderPeers();
  renderMessages();
  let unread = 0;
  for (const v of state.views.values()) unread += v.unread;
  document.title = unread ? `(${unread}) echo` : 'echo';
}

function renderList() {
  const rooms = $('rooms');
  const directs = $('directs');
  rooms.replaceChildren();
  directs.replaceChildren();
  for (const v of state.views.values()) {
    const li = el('li');
    const b = el('button', '', label(v));
    b.setAttribute('aria-current', String(v.id === state.current));
    if (v.unread) {
      const badge = el('span', 'badge', String(v.unread));
      badge.setAttribute('aria-label', `${v.unread} unread`);
      b.append(badge);
    }
    b.addEventListener('click', () => select(v.id));
    li.append(b);
    (v.kind === 'room' ? rooms : directs).append(li);
  }
}

function renderPeers() {
  const ul = $('peers');
  ul.replaceChildren();
  const peers = [...state.peers.entries()].sort((a, b) => Number(b[1].online) - Number(a[1].online));
  for (const [id, p] of peers) {
    const li = el('li');
    const b = el('button');
    b.title = id;
    b.setAttribute('aria-label', `${p.display}, ${p.online ? 'online' : 'offline'}: open a direct conversation`);
    b.append(el('span', p.online ? 'dot on' : 'dot'), el('span', '', p.display));
    if (p.online && p.rtt_ms != null) b.append(el('span', 'rtt', `${p.rtt_ms.toFixed(1)} ms`));
    b.addEventListener('click', () => {
      view(id, 'direct');
      select(id);
    });
    li.append(b);
    ul.append(li);
  }
}

function time(/** @type {number} */ ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

function renderMessages() {
  const list = $('messages');
  const v = state.current ? state.views.get(state.current) : undefined;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  $('title').textContent = v ? (v.kind === 'room' ? `${label(v)} · ${v.members.size} other${v.members.size === 1 ? '' : 's'} here` : `${label(v)} (direct)`) : 'no room: join one';
  /** @type {HTMLInputElement} */ ($('send-input')).placeholder = v ? `Message ${label(v)}` : 'Join a room first';
  const items = [];
  const all = v ? v.messages : [];
  const to = v ? all.length - v.end : 0;
  const from = v ? Math.max(0, to - v.shown) : 0;
  if (v && v.kind === 'room') items.push(el('li', 'older', v.complete && from === 0 ? 'beginning of the room' : v.loading ? 'loading older messages…' : 'scroll up for older messages'));
  // Keep what the user looks at in place: the first row in view stays where it is.
  let anchor = null;
  if (!atBottom) {
    for (const li of list.children) {
      const e = /** @type {HTMLElement} */ (li);
      if (e.offsetTop + e.offsetHeight > list.scrollTop && e.dataset.key) {
        anchor = { key: e.dataset.key, delta: e.offsetTop - list.scrollTop };
        break;
      }
    }
  }
  for (const m of all.slice(from, to)) items.push(row(m));
  list.replaceChildren(...items);
  if (atBottom && v && v.end === 0) {
    list.scrollTop = list.scrollHeight;
    // At the newest lines: the window shrinks again to what the screen needs.
    v.shown = SHOWN;
  } else if (anchor) {
    const a = /** @type {HTMLElement|null} */ (list.querySelector(`[data-key="${CSS.escape(anchor.key)}"]`));
    if (a) list.scrollTop = a.offsetTop - anchor.delta;
  }
}

function row(/** @type {Msg} */ m) {
  let li = rows.get(m);
  if (!li) {
    li = el('li', `msg${m.own ? ' own' : ''}${m.mention ? ' mention' : ''}`);
    li.dataset.key = m.key;
    li.append(el('span', 'time', time(m.sent_at_ms)), el('span', 'who', `${m.display}:`));
    if (m.offer) li.append(offerCard(m.offer));
    else li.append(el('span', 'text', m.text));
    rows.set(m, li);
  }
  return li;
}

function size(/** @type {number} */ n) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${u[i]}`;
}

function offerCard(/** @type {Offer} */ o) {
  const card = el('span', 'offer');
  card.append(el('span', 'file-name', o.name), el('span', 'file-meta', ` ${size(o.size)}${o.mime ? ` · ${o.mime}` : ''} `));
  const b = el('button', '', 'Download');
  b.setAttribute('aria-label', `Download ${o.name}, ${size(o.size)}`);
  b.addEventListener('click', () => send(`/get ${o.hash}`));
  card.append(b);
  return card;
}

function renderTransfers() {
  const box = $('transfers');
  box.replaceChildren();
  const recent = [...state.transfers.values()].slice(-5);
  box.hidden = recent.length === 0;
  for (const t of recent) {
    const row = el('div', `transfer ${t.state}`);
    const bar = /** @type {HTMLProgressElement} */ (el('progress'));
    bar.max = Math.max(1, t.offer.size);
    bar.value = t.done;
    bar.setAttribute('aria-label', `${t.offer.name}: ${Math.floor((100 * t.done) / Math.max(1, t.offer.size))}%`);
    let status = `${size(t.done)} of ${size(t.offer.size)}`;
    if (t.state === 'running') {
      if (t.rate) {
        status += `, ${size(t.rate)}/s`;
        const left = (t.offer.size - t.done) / t.rate;
        status += `, ${Math.floor(left / 60)}:${String(Math.floor(left % 60)).padStart(2, '0')} left`;
      }
      status += `, ${t.sources} source${t.sources === 1 ? '' : 's'}`;
    } else {
      status = t.state === 'done' ? 'done' : `${t.state}${t.detail ? `: ${t.detail}` : ''}`;
    }
    row.append(el('span', 'file-name', t.offer.name), bar, el('span', 'file-meta', status));
    if (t.state === 'done') {
      const a = /** @type {HTMLAnchorElement} */ (el('a', '', 'Save'));
      a.href = `/download/${t.id}`;
      a.setAttribute('download', t.offer.name);
      row.append(a);
    } else if (t.state === 'running') {
      const c = el('button', '', 'Cancel');
      c.addEventListener('click', () => send(`/cancel ${t.offer.hash}`));
      row.append(c);
    }
    box.append(row);
  }
}

/** A file dropped on the page: uploaded to the node, which shares it where we are. */
async function share(/** @type {File} */ file) {
  const v = state.current ? state.views.get(state.current) : undefined;
  if (!v) return notice('join a room first', true);
  notice(`uploading ${file.name} to your node…`);
  try {
    const r = await fetch('/upload', {
      method: 'POST',
      headers: {
        'Content-Type': 'application/octet-stream',
        'X-File-Name': encodeURIComponent(file.name),
        'X-Echo-Target': v.kind === 'room' ? `#${v.id}` : v.id,
      },
      body: file,
    });
    if (!r.ok) notice(`cannot share ${file.name}: ${await r.text()}`, true);
  } catch (err) {
    notice(`cannot share ${file.name}: ${err}`, true);
  }
}

/** A stored direct conversation is read from the node's history once, when opened. */
function askHistory(/** @type {View} */ v) {
  if (v.kind === 'direct' && v.stored && !v.asked) v.asked = send(`/history @${v.id} ${PAGE}`);
}

function select(/** @type {string} */ id) {
  state.current = id;
  const v = state.views.get(id);
  if (v) {
    v.unread = 0;
    if (v.kind === 'direct') {
      askHistory(v);
      send(`/read ${id}`);
    }
  }
  $('side').classList.remove('open');
  render();
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
  $('send-input').focus();
}

let noticeTimer = 0;
function notice(/** @type {string} */ text, error = false) {
  const n = $('notices');
  n.replaceChildren(el('div', error ? 'error' : '', text));
  clearTimeout(noticeTimer);
  noticeTimer = window.setTimeout(() => n.replaceChildren(), 8000);
}

function oneLine(/** @type {string} */ s) {
  return s.replace(/[\r\n]+/g, ' ').trim();
}

$('send-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('send-input'));
  const text = oneLine(input.value);
  if (!text) return;
  const v = state.current ? state.views.get(state.current) : undefined;
  if (!v) return notice('join a room first', true);
  // Explicit targets: the node's own "current room" may be another tab's.
  const line = text.startsWith('/') && !text.startsWith('//') ? text : v.kind === 'room' ? `/send ${v.id} ${text}` : `/msg ${v.id} ${text}`;
  if (send(line)) input.value = '';
});

$('join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('join-input'));
  const room = oneLine(input.value).replace(/^#/, '');
  if (room && send(`/join ${room}`)) {
    joining.add(room);
    input.value = '';
  }
});

$('connect-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('connect-input'));
  const addr = oneLine(input.value);
  if (addr && send(`/connect ${addr}`)) input.value = '';
});

$('nick-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('nick-input'));
  const name = oneLine(input.value);
  if (name && send(`/nick ${name}`)) input.value = '';
});

$('leave').addEventListener('click', () => {
  const v = state.current ? state.views.get(state.current) : undefined;
  if (!v) return;
  if (v.kind === 'room') send(`/leave ${v.id}`);
  else {
    state.views.delete(v.id);
    state.current = firstRoom();
    render();
  }
});

$('copy-addr').addEventListener('click', async () => {
  const addr = state.me.addrs.find((a) => !a.includes('/127.0.0.1/') && !a.includes('/::1/')) ?? state.me.addrs[0];
  if (!addr) return notice('no address yet', true);
  try {
    await navigator.clipboard.writeText(addr);
    notice(`copied: ${addr}`);
  } catch {
    notice(`your address: ${addr}`);
  }
});

$('menu').addEventListener('click', () => {
  const open = $('side').classList.toggle('open');
  $('menu').setAttribute('aria-expanded', String(open));
});

$('messages').addEventListener('scroll', () => {
  const list = $('messages');
  const v = state.current ? state.views.get(state.current) : undefined;
  if (!v) return;
  if (list.scrollTop < 80) showOlder(v);
  else if (list.scrollHeight - list.scrollTop - list.clientHeight < 80) showNewer(v);
});

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && state.current) {
    const v = state.views.get(state.current);
    if (v) v.unread = 0;
    render();
  }
});

if ('Notification' in window && Notification.permission === 'default') {
  const b = $('notify');
  b.hidden = false;
  b.addEventListener('click', async () => {
    await Notification.requestPermission();
    b.hidden = true;
  });
}

const main = document.querySelector('main');
main?.addEventListener('dragover', (ev) => {
  ev.preventDefault();
  main.classList.add('drop');
});
main?.addEventListener('dragleave', () => main.classList.remove('drop'));
main?.addEventListener('drop', (ev) => {
  ev.preventDefault();
  main.classList.remove('drop');
  for (const f of ev.dataTransfer?.files ?? []) share(f);
});
$('attach').addEventListener('change', () => {
  const input = /** @type {HTMLInputElement} */ ($('attach'));
  for (const f of input.files ?? []) share(f);
  input.value = '';
});

connect();
