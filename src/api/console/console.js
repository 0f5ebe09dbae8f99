// The Streamgate console: start streams, send records, and watch results live over
// Server-Sent Events, with an API key or a scoped stream token. No build step, no CDN.
//
// The credential stays in this page's memory. With a key, the page asks for a short-lived
// subscribe token to open the EventSource (which cannot set headers), so the key itself never
// goes into a URL. Rate-limited answers (429/503 with Retry-After) are waited out and retried.
'use strict';

const $ = (id) => document.getElementById(id);
const FRAME_TYPES = ['result', 'error', 'end', 'gap', 'lagged', 'close'];

const state = {
  credential: null,
  claims: null, // set when the credential is a stream token
  stream: null,
  source: null,
  lastCursor: null,
  feedToken: null,
};

function say(text, isError) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function looksLikeToken(text) {
  return /^eyJ[\w-]*\.[\w-]+\.[\w-]*$/.test(text);
}

function tokenClaims(token) {
  const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
}

function authHeaders() {
  return state.claims
    ? { Authorization: 'Bearer ' + state.credential }
    : { 'X-API-Key': state.credential };
}

// One API call; waits out 429/503 answers that carry Retry-After. Throws with the daemon's
// error code and message otherwise.
async function api(method, path, body, contentType) {
  for (;;) {
    const headers = authHeaders();
    if (body !== undefined) headers['Content-Type'] = contentType || 'application/json';
    const resp = await fetch(path, { method, headers, body });
    const text = await resp.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch (_) {
      // not JSON: reported below by status
    }
    const retryAfter = resp.headers.get('Retry-After');
    if ((resp.status === 429 || resp.status === 503) && retryAfter) {
      const message = json && json.error ? json.error.message : resp.statusText;
      say(`${message} — retrying in ${retryAfter} s`);
      await sleep(Number(retryAfter) * 1000);
      continue;
    }
    if (!resp.ok) {
      const detail = json && json.error ? `${json.error.code}: ${json.error.message}` : text;
      throw new Error(`HTTP ${resp.status} ${detail}`);
    }
    return json;
  }
}

async function connect(event) {
  event.preventDefault();
  const credential = $('credential').value.trim();
  if (!credential) return;
  closeFeed();
  state.credential = credential;
  state.claims = null;
  try {
    if (looksLikeToken(credential)) {
      state.claims = tokenClaims(credential);
      const scope = state.claims.scope || [];
      $('key-panel').hidden = true;
      const expires = new Date(state.claims.exp * 1000).toLocaleTimeString();
      say(`connected with a token for one stream (${scope.join(' and ')}), until ${expires}`);
      await select(state.claims.stream);
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
    const started = await api('POST', '/api/stream/start', JSON.stringify({ processor: processorSpec() }));
    say(`started stream ${started.stream_id}`);
    await select(started.stream_id);
    await refreshStreams();
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
  const list = await api('GET', '/api/streams');
  const body = $('streams');
  body.replaceChildren();
  for (const s of list.streams) {
    const row = document.createElement('tr');
    row.dataset.streamId = s.stream_id;
    if (s.stream_id === state.stream) row.className = 'selected';
    const cells = [
      s.stream_id,
      processorName(s.processor),
      s.state,
      s.records_in,
      s.records_out,
      s.subscribers,
    ];
    cells.forEach((value, i) => {
      const cell = document.createElement('td');
      cell.textContent = String(value);
      if (i >= 3) cell.className = 'num';
      row.appendChild(cell);
    });
    row.addEventListener('click', () => select(s.stream_id).catch((e) => say(e.message, true)));
    body.appendChild(row);
  }
}

async function select(streamId) {
  state.stream = streamId;
  state.lastCursor = null;
  $('stream-id').textContent = streamId;
  $('stream-panel').hidden = false;
  $('results').replaceChildren();
  const scope = state.claims ? state.claims.scope || [] : ['send', 'subscribe'];
  $('send-form').hidden = !scope.includes('send');
  $('end').hidden = Boolean(state.claims);
  for (const row of $('streams').children) {
    row.className = row.dataset.streamId === streamId ? 'selected' : '';
  }
  if (scope.includes('subscribe')) {
    await openFeed();
  } else {
    addLine('close', null, 'this token cannot subscribe: results are not shown');
  }
}

function closeFeed() {
  if (state.source) state.source.close();
  state.source = null;
}

// The token the feed is opened with: the pasted one, or a subscribe token asked for with the
// key (kept until a minute before it expires).
async function feedToken() {
  if (state.claims) return state.credential;
  const now = Date.now() / 1000;
  const cached = state.feedToken;
  if (cached && cached.stream === state.stream && cached.expiresAt - 60 > now) return cached.token;
  const body = JSON.stringify({ scope: ['subscribe'], ttl_s: 3600 });
  const issued = await api('POST', `/api/stream/${state.stream}/tokens`, body);
  state.feedToken = { stream: state.stream, token: issued.token, expiresAt: issued.expires_at };
  return issued.token;
}

// Opens the results as Server-Sent Events, from the start or after the last cursor seen.
async function openFeed() {
  closeFeed();
  const token = await feedToken();
  const from = state.lastCursor === null ? 'earliest' : String(state.lastCursor + 1);
  const url = `/api/stream/${encodeURIComponent(state.stream)}/results?from=${from}&access_token=${encodeURIComponent(token)}`;
  const source = new EventSource(url);
  state.source = source;
  for (const type of FRAME_TYPES) {
    source.addEventListener(type, (event) => onFrame(source, type, event));
  }
  // EventSource gives up on an answer that is not a stream (a 429 under the rate limit, a
  // 503 while the daemon restarts): open it again shortly, from the last cursor.
  source.onerror = () => {
    if (source === state.source && source.readyState === EventSource.CLOSED) {
      setTimeout(() => {
        if (source === state.source) openFeed().catch((e) => say(e.message, true));
      }, 2000);
    }
  };
}

function onFrame(source, type, event) {
  // EventSource reports its own connection failures as `error` events without data; those
  // are handled by `onerror`, not here.
  if (source !== state.source || typeof event.data !== 'string') return;
  const frame = JSON.parse(event.data);
  if (typeof frame.cursor === 'number') state.lastCursor = frame.cursor;
  switch (type) {
    case 'result':
      addLine(type, frame.cursor, JSON.stringify(frame.data));
      break;
    case 'error':
      addLine(type, frame.cursor, `${frame.error.code}: ${frame.error.message}`);
      break;
    case 'gap':
      addLine(type, null, `skipped ${frame.skipped} results (read too slowly)`);
      break;
    case 'end':
      addLine(type, frame.cursor, 'the stream ended');
      closeFeed();
      break;
    case 'lagged':
      addLine(type, null, `fell behind; resuming from ${frame.resume}`);
      state.lastCursor = frame.resume - 1;
      openFeed().catch((e) => say(e.message, true));
      break;
    case 'close':
      addLine(type, null, `closed: ${frame.reason} (${frame.code})`);
      closeFeed();
      if (frame.code === 4401 && !state.claims) {
        openFeed().catch((e) => say(e.message, true)); // a fresh token, same place
      } else if (frame.code === 1001) {
        setTimeout(() => openFeed().catch((e) => say(e.message, true)), 1000);
      }
      break;
    default:
      break;
  }
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
  item.appendChild(document.createTextNode(type === 'result' ? text : `${type}: ${text}`));
  const list = $('results');
  list.appendChild(item);
  list.scrollTop = list.scrollHeight;
}

async function sendLines(event) {
  event.preventDefault();
  const lines = $('lines').value.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) return;
  const body = lines
    .map((line) => {
      try {
        JSON.parse(line);
        return line;
      } catch (_) {
        return JSON.stringify(line);
      }
    })
    .join('\n');
  try {
    const accepted = await api('POST', `/api/stream/${state.stream}/send`, body, 'application/x-ndjson');
    $('lines').value = '';
    if (!state.claims) await refreshStreams();
    say(`${accepted.offsets.length} record(s) acknowledged by the broker`);
  } catch (e) {
    say(e.message, true);
  }
}

async function endStream() {
  try {
    await api('DELETE', `/api/stream/${state.stream}`);
    say(`ended stream ${state.stream}`);
    await refreshStreams();
  } catch (e) {
    say(e.message, true);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', connect);
  $('start-form').addEventListener('submit', startStream);
  $('refresh').addEventListener('click', () => refreshStreams().catch((e) => say(e.message, true)));
  $('send-form').addEventListener('submit', sendLines);
  $('end').addEventListener('click', endStream);
  $('processor').addEventListener('change', () => {
    $('jq-filter').hidden = $('processor').value !== 'jq';
  });
});
