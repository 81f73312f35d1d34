// echo's web UI: one WebSocket to the node, carrying the `--json` schema (chat/JSON.md):
// events in, command lines out. Peer text is only ever set with textContent.
// @ts-check

/** @typedef {{room?: string, author: string, name: string, display: string, seq?: number,
 *   lamport?: number, sent_at_ms: number, text: string, own: boolean, key: string,
 *   mention?: boolean}} Msg */
/** @typedef {{id: string, kind: 'room'|'direct', messages: Msg[], keys: Set<string>,
 *   unread: number, members: Set<string>, complete: boolean, loading: boolean,
 *   shown: number}} View */

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

const state = {
  me: { peer_id: '', name: '', display: '', addrs: /** @type {string[]} */ ([]) },
  /** @type {Map<string, View>} room name or peer id -> view */
  views: new Map(),
  /** @type {Map<string, {name: string, display: string, online: boolean, rtt_ms: number|null}>} */
  peers: new Map(),
  /** @type {string|null} view id */
  current: null,
  connected: false,
};

/** Messages a page of history holds. */
const PAGE = 100;
/** Messages kept per view in the page (older ones are fetched again when scrolled to). */
const KEEP = 20000;
/** Messages drawn at first: the DOM holds only what was scrolled through. */
const SHOWN = 200;

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
    v = { id, kind, messages: [], keys: new Set(), unread: 0, members: new Set(), complete: kind === 'direct', loading: false, shown: SHOWN };
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
    key: `${e.lamport}:${e.seq}:${e.author}`,
  });
}

let directSeq = 0;
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
      state.peers.clear();
      for (const p of e.peers) state.peers.set(p.peer, p);
      if (!state.current || !state.views.has(state.current)) {
        state.current = e.current ?? (e.rooms[0] ? e.rooms[0].room : null);
      }
      render();
      break;
    }
    case 'history': {
      const v = view(e.room, 'room');
      v.loading = false;
      v.complete = !!e.complete;
      const list = $('messages');
      const before = list.scrollHeight - list.scrollTop;
      v.shown += add(v, e.messages.map(roomMsg));
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
      const m = { author: e.from, name: e.name, display: e.display, sent_at_ms: e.sent_at_ms, text: e.text, own: false, key: `d${directSeq++}` };
      add(v, [m]);
      arrived(v, m, true);
      render();
      break;
    }
    case 'direct_sent': {
      const v = view(e.to, 'direct');
      add(v, [{ author: state.me.peer_id, name: state.me.name, display: state.me.display, sent_at_ms: Date.now(), text: e.text, own: true, key: `d${directSeq++}` }]);
      render();
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

/** Scrolled to the top: draw more of what is held, else fetch an older page. */
function showOlder(/** @type {View} */ v) {
  if (v.shown < v.messages.length) {
    const list = $('messages');
    const before = list.scrollHeight - list.scrollTop;
    v.shown += PAGE;
    renderMessages();
    list.scrollTop = list.scrollHeight - before;
  } else {
    loadOlder(v);
  }
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
  const from = v ? Math.max(0, all.length - v.shown) : 0;
  if (v && v.kind === 'room') items.push(el('li', 'older', v.complete && from === 0 ? 'beginning of the room' : v.loading ? 'loading older messages…' : 'scroll up for older messages'));
  for (const m of all.slice(from)) {
    const li = el('li', `msg${m.own ? ' own' : ''}${m.mention ? ' mention' : ''}`);
    li.append(el('span', 'time', time(m.sent_at_ms)), el('span', 'who', `${m.display}:`), el('span', 'text', m.text));
    items.push(li);
  }
  list.replaceChildren(...items);
  if (atBottom) list.scrollTop = list.scrollHeight;
  // Back at the newest lines: the DOM shrinks again to what the screen needs.
  if (v && atBottom && v.shown > SHOWN) v.shown = SHOWN;
}

function select(/** @type {string} */ id) {
  state.current = id;
  const v = state.views.get(id);
  if (v) {
    v.unread = 0;
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
  if (list.scrollTop < 80 && state.current) {
    const v = state.views.get(state.current);
    if (v) showOlder(v);
  }
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

connect();
