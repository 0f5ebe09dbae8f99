// The Streamgate console: start streams, send records, and watch every stream of the list
// live, with an API key or a stream token.
//
// It runs on Streamgate's TypeScript client library (its browser bundle, served by this daemon
// at /streamgate.browser.js): every stream the page shows is followed over ONE /api/connect
// WebSocket, which reconnects and resumes each stream from its last cursor by itself, and every
// record is sent over it with an idempotency key of its own, so a retry never stores it twice.
// The credential stays in this page's memory; in the WebSocket it travels as a subprotocol,
// never in a URL. Rate-limited HTTP answers (429/503 with Retry-After) are waited out.
import { Client } from '/streamgate.browser.js';

const $ = (id) => document.getElementById(id);
/** Results kept per stream, for when it is selected. */
const KEEP = 500;

const state = {
  client: null,
  claims: null, // set when the credential is a stream token
  selected: null,
  /** stream id -> { frames: [], out: number } */
  followed: new Map(),
};

function say(text, isError) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

function looksLikeToken(text) {
  return /^eyJ[\w-]*\.[\w-]+\.[\w-]*$/.test(text);
}

function tokenClaims(token) {
  const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
}

// The WebSockets the page has opened so far (the browser test checks it stays at one).
function onEvent(event) {
  if (event.type === 'connected') {
    document.body.dataset.connections = String(Number(document.body.dataset.connections || 0) + 1);
  }
}

async function connect(event) {
  event.preventDefault();
  const credential = $('credential').value.trim();
  if (!credential) return;
  if (state.client) await state.client.close();
  state.followed.clear();
  $('streams').replaceChildren();
  state.claims = looksLikeToken(credential) ? tokenClaims(credential) : null;
  const auth = state.claims ? { token: credential } : { apiKey: credential };
  state.client = new Client({ url: location.origin, ...auth, onEvent });
  try {
    if (state.claims) {
      const streams = state.claims.streams || [state.claims.stream];
      const scope = state.claims.scope || [];
      const expires = new Date(state.claims.exp * 1000).toLocaleTimeString();
      const which = streams.length === 1 ? 'one stream' : `${streams.length} streams`;
      $('key-panel').hidden = true;
      say(`connected with a token for ${which} (${scope.join(' and ')}), until ${expires}`);
      if (scope.includes('subscribe')) streams.forEach(follow);
      await select(streams[0]);
    } else {
      await refreshStreams();
      $('key-panel').hidden = false;
      say('connected with an API key');
    }
  } catch (e) {
    say(e.message, true);
  }
}

function processorSpec() {
  const choice = $('processor').value;
  if (choice !== 'jq') return choice;
  return { type: 'jq', filter: $('jq-filter').value.trim() || '.' };
}

async function startStream(event) {
  event.preventDefault();
  try {
    const id = await state.client.start({ processor: processorSpec() });
    say(`started stream ${id}`);
    await refreshStreams();
    await select(id);
  } catch (e) {
    say(e.message, true);
  }
}

function processorName(p) {
  return typeof p === 'string' ? p : p.type || JSON.stringify(p);
}

// One listing at a time: clicks while one is on its way (or waiting out a 429) share it.
let listing = null;
function refreshStreams() {
  if (!listing) {
    listing = loadStreams().finally(() => {
      listing = null;
    });
  }
  return listing;
}

async function loadStreams() {
  const streams = await state.client.list();
  const body = $('streams');
  body.replaceChildren();
  for (const s of streams) {
    const row = document.createElement('tr');
    row.dataset.streamId = s.stream_id;
    if (s.stream_id === state.selected) row.className = 'selected';
    const cells = [s.stream_id, processorName(s.processor), s.state, s.records_in, s.records_out, s.subscribers, ''];
    cells.forEach((value, i) => {
      const cell = document.createElement('td');
      cell.textContent = String(value);
      if (i >= 3 && i <= 5) cell.className = 'num';
      if (i === 6) cell.className = 'last';
      row.appendChild(cell);
    });
    row.addEventListener('click', () => select(s.stream_id).catch((e) => say(e.message, true)));
    body.appendChild(row);
    if (s.state === 'open') follow(s.stream_id);
    showLast(s.stream_id);
  }
}

// Follows a stream (from its first result) on the page's one connection, for as long as the
// page lives or until the stream ends.
function follow(id) {
  if (state.followed.has(id)) return;
  const entry = { frames: [], out: 0 };
  state.followed.set(id, entry);
  (async () => {
    for await (const frame of state.client.subscribe(id, { from: 'earliest' })) {
      entry.frames.push(frame);
      if (entry.frames.length > KEEP) entry.frames.shift();
      if (frame.type === 'result') entry.out += 1;
      showLast(id);
      if (id === state.selected) addFrame(frame);
    }
  })().catch((e) => {
    if (id === state.selected) addLine('close', null, e.message);
  });
}

// The row's last-result cell.
function showLast(id) {
  const row = document.querySelector(`#streams tr[data-stream-id="${CSS.escape(id)}"]`);
  const entry = state.followed.get(id);
  if (!row || !entry) return;
  const last = entry.frames[entry.frames.length - 1];
  row.lastChild.textContent = last ? describe(last) : '';
}

async function select(id) {
  state.selected = id;
  $('stream-id').textContent = id;
  $('stream-panel').hidden = false;
  $('results').replaceChildren();
  const scope = state.claims ? state.claims.scope || [] : ['send', 'subscribe'];
  $('send-form').hidden = !scope.includes('send');
  $('end').hidden = Boolean(state.claims);
  for (const row of $('streams').children) {
    row.className = row.dataset.streamId === id ? 'selected' : '';
  }
  if (!scope.includes('subscribe')) {
    addLine('close', null, 'this token cannot subscribe: results are not shown');
    return;
  }
  follow(id);
  for (const frame of state.followed.get(id).frames) addFrame(frame);
}

function describe(frame) {
  switch (frame.type) {
    case 'result':
      return JSON.stringify(frame.data);
    case 'error':
      return `error: ${frame.error.code}: ${frame.error.message}`;
    case 'gap':
      return `gap: ${frame.skipped} results no longer held`;
    case 'end':
      return 'end: the stream ended';
    default:
      return frame.type;
  }
}

function addFrame(frame) {
  addLine(frame.type, typeof frame.cursor === 'number' ? frame.cursor : null, describe(frame));
}

function addLine(type, cursor, text) {
  const item = document.createElement('li');
  item.className = type;
  if (cursor !== null && cursor !== undefined) {
    const c = document.createElement('span');
    c.className = 'cursor';
    c.textContent = '#' + cursor;
    item.appendChild(c);
  }
  item.appendChild(document.createTextNode(type === 'close' ? `closed: ${text}` : text));
  const list = $('results');
  list.appendChild(item);
  list.scrollTop = list.scrollHeight;
}

// A line that is JSON is sent as that JSON, any other as a string; in order, each acked once
// the broker stored it.
async function sendLines(event) {
  event.preventDefault();
  const lines = $('lines').value.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) return;
  const values = lines.map((line) => {
    try {
      return JSON.parse(line);
    } catch (_) {
      return line;
    }
  });
  try {
    const acks = await Promise.all(values.map((v) => state.client.send(state.selected, v)));
    $('lines').value = '';
    say(`${acks.length} record(s) acknowledged by the broker`);
    if (!state.claims) await refreshStreams();
  } catch (e) {
    say(e.message, true);
  }
}

async function endStream() {
  try {
    await state.client.end(state.selected);
    say(`ended stream ${state.selected}`);
    await refreshStreams();
  } catch (e) {
    say(e.message, true);
  }
}

$('login').addEventListener('submit', connect);
$('start-form').addEventListener('submit', startStream);
$('refresh').addEventListener('click', () => refreshStreams().catch((e) => say(e.message, true)));
$('send-form').addEventListener('submit', sendLines);
$('end').addEventListener('click', endStream);
$('processor').addEventListener('change', () => {
  $('jq-filter').hidden = $('processor').value !== 'jq';
});
