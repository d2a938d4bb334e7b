// coap2mqtt's page: plain JS, no framework, no network but this gateway. Every text that
// comes from the gateway (device names, values, topics) goes into the DOM as text, never
// as HTML.
'use strict';

const main = () => document.getElementById('main');
const state = { page: null, arg: null, devices: new Map(), rate: [], health: null };

// el('tr', {class: 'x', data: {device: 'a'}}, child, 'text', ...)
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// The page's content (replaceChildren itself would print a null as "null").
function render(...nodes) {
  main().replaceChildren(...nodes.flat().filter(n => n !== null && n !== undefined && n !== false));
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
  const r = await fetch(path, Object.assign({ credentials: 'same-origin' }, opts));
  if (r.status === 401) { location.href = '/login'; throw new Error('log in'); }
  const j = await r.json().catch(() => ({ status: 'error', error: 'HTTP ' + r.status }));
  if (!r.ok && !j.error) j.error = 'HTTP ' + r.status;
  return j;
}

function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  return new Date(ms).toLocaleString();
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's';
}

function show(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function badge(online) {
  return el('span', { class: 'badge state ' + (online ? 'online' : 'offline') }, online ? 'online' : 'offline');
}

function resultBox(box, ok, text) {
  box.className = 'result ' + (ok ? 'ok' : 'error');
  box.textContent = text;
}

// ---- devices ------------------------------------------------------------------------

async function pageDevices() {
  const list = await api('/api/devices');
  state.devices = new Map(list.map(d => [d.name, d]));
  const online = list.filter(d => d.online).length;
  const body = el('tbody', { id: 'devices' }, list.map(deviceRow));
  render(
    el('h1', {}, 'Devices'),
    el('p', { class: 'sub' }, `${list.length} known, ${online} online · updates live`),
    el('div', { class: 'card' }, list.length === 0 ? el('p', { class: 'muted' }, 'No device yet.') :
      el('table', {}, el('thead', {}, el('tr', {}, ['Name', 'Address', 'Source', 'State', 'Last seen',
        'Resources', 'Notifications', 'Failures'].map(h => el('th', {}, h)))), body)));
}

function deviceRow(d) {
  const c = d.counters || {};
  return el('tr', { data: { device: d.name } },
    el('td', {}, el('a', { href: '#/device/' + encodeURIComponent(d.name), class: 'name' }, d.name),
      d.friendly_name ? el('div', { class: 'muted' }, d.friendly_name) : null),
    el('td', { class: 'mono' }, d.uri),
    el('td', {}, el('span', { class: 'badge src' }, d.source)),
    el('td', {}, badge(d.online)),
    el('td', { class: 'seen', data: { ms: d.last_seen } }, ago(d.last_seen)),
    el('td', {}, d.resources),
    el('td', {}, c.notifications ?? 0),
    el('td', {}, c.failures ?? 0));
}

// ---- one device -----------------------------------------------------------------------

async function pageDevice(name) {
  const d = await api('/api/device?name=' + encodeURIComponent(name));
  if (d.error) { render(el('h1', {}, name), el('p', { class: 'result error' }, d.error)); return; }
  const renameBox = el('div', { class: 'result' });
  const renameTo = el('input', { id: 'rename-to', placeholder: 'new name', value: d.name });
  const rename = async () => {
    const r = await api('/api/device/rename', { from: d.name, to: renameTo.value.trim() });
    if (r.status === 'ok') location.hash = '#/device/' + encodeURIComponent(r.data.to);
    else resultBox(renameBox, false, r.error);
  };
  const remove = async () => {
    if (!confirm(`Forget ${d.name}? It comes back if it is configured or answers discovery.`)) return;
    const r = await api('/api/device/remove', { device: d.name });
    if (r.status === 'ok') location.hash = '#/devices'; else resultBox(renameBox, false, r.error);
  };
  const rows = d.resources.map(r => resourceRow(d, r));
  const cmdPath = el('select', { id: 'cmd-path' }, d.resources.map(r => el('option', { value: r.path }, r.path)));
  const cmdRule = el('select', { id: 'cmd-rule' },
    d.commands.map(c => el('option', { value: c.index }, `${c.method} ${c.topic}`)));
  const cmdPayload = el('input', { id: 'cmd-payload', placeholder: 'payload, e.g. on' });
  const cmdResult = el('div', { id: 'cmd-result', class: 'result' });
  const firstAllowed = d.resources.find(r => r.commands.length);
  if (firstAllowed) cmdPath.value = firstAllowed.path;
  const send = async () => {
    cmdResult.className = 'result'; cmdResult.textContent = 'sending…';
    const r = await api('/api/command', { device: d.name, path: cmdPath.value,
      command: Number(cmdRule.value || 0), payload: cmdPayload.value });
    if (r.error) { resultBox(cmdResult, false, r.error); return; }
    const res = r.result || {};
    const ok = res.status === 'ok' || (res.code && res.code.startsWith('2'));
    resultBox(cmdResult, ok && !res.error, `${r.topic}\n${JSON.stringify(res, null, 1)}`);
  };
  render(
    el('div', { class: 'row' }, el('h1', { id: 'device-name' }, d.name), badge(d.online)),
    el('p', { class: 'sub' }, el('span', { class: 'mono' }, d.uri), ' · ', d.source,
      ' · last seen ', el('span', { class: 'seen', data: { ms: d.last_seen } }, ago(d.last_seen))),
    el('div', { class: 'card' }, el('h2', {}, 'Resources'),
      el('table', {}, el('thead', {}, el('tr', {}, ['Path', 'rt', 'if', 'ct', 'obs', 'Latest value',
        'Rules → topics', ''].map(h => el('th', {}, h)))), el('tbody', { id: 'resources' }, rows))),
    el('div', { class: 'cols' },
      el('div', { class: 'card' }, el('h2', {}, 'Send a command'),
        el('p', { class: 'muted' }, 'Goes through the same [[command]] allow-list as MQTT.'),
        d.commands.length === 0 ? el('p', { class: 'muted' }, 'No [[command]] is configured.') :
          el('div', {}, el('div', { class: 'row' }, cmdPath, cmdRule),
            el('div', { class: 'row' }, cmdPayload,
              el('button', { class: 'primary', id: 'cmd-send', onclick: send }, 'Send'))),
        cmdResult),
      el('div', { class: 'card' }, el('h2', {}, 'Manage'),
        el('div', { class: 'row' }, renameTo, el('button', { id: 'rename-btn', onclick: rename }, 'Rename'),
          el('button', { class: 'danger', id: 'remove-btn', onclick: remove }, 'Remove')),
        el('p', { class: 'muted' }, 'Renaming moves its MQTT topics to the new name.'), renameBox)));
}

function resourceRow(d, r) {
  const readBox = el('div', { class: 'result' });
  const read = async () => {
    readBox.className = 'result'; readBox.textContent = 'reading…';
    const x = await api('/api/device/read', { device: d.name, path: r.path });
    resultBox(readBox, x.status === 'ok', x.status === 'ok' ?
      `${x.data.code} · ${show(x.data.payload)} · ${x.data.latency_ms} ms` : x.error);
  };
  const topics = (r.rules || []).map((rule, i) => el('div', {}, el('span', { class: 'tag' }, rule),
    ' → ', el('code', {}, r.topics[i])));
  return el('tr', { data: { path: r.path } },
    el('td', { class: 'mono' }, r.path, r.title ? el('div', { class: 'muted' }, r.title) : null),
    el('td', {}, r.rt.map(x => el('span', { class: 'tag' }, x))),
    el('td', {}, r.if.map(x => el('span', { class: 'tag' }, x))),
    el('td', {}, r.ct.join(', ')),
    el('td', {}, r.obs ? '✓' : ''),
    el('td', {}, el('div', { class: 'value' }, 'value' in r ? show(r.value) : '—'),
      el('div', { class: 'muted vtime', data: { ms: r.time || 0 } }, r.time ? ago(r.time) : '')),
    el('td', {}, topics.length ? topics : el('span', { class: 'muted' }, 'not watched')),
    el('td', {}, el('button', { class: 'small read', onclick: read }, 'Read now'), readBox));
}

// ---- rules ------------------------------------------------------------------------------

async function pageRules() {
  const r = await api('/api/rules');
  const box = el('div', { class: 'result' });
  const reload = async () => {
    const x = await api('/api/rules/reload', {});
    resultBox(box, x.status === 'ok', x.status === 'ok' ?
      `reloaded: ${x.data.rules} rule(s), ${x.data.commands} command(s)` : x.error);
    setTimeout(route, 800);
  };
  render(
    el('div', { class: 'row' }, el('h1', {}, 'Rules'), el('button', { onclick: reload }, 'Reload rules')),
    el('p', { class: 'sub' }, `${r.rules.length} rule(s), ${r.commands.length} command(s) loaded`), box,
    r.reload_error ? el('div', { class: 'card', id: 'reload-error' }, el('h2', {}, 'The last reload failed; the rules below are still in force'),
      el('pre', { class: 'errors' }, r.reload_error)) : null,
    el('div', { class: 'card' }, el('h2', {}, 'Rules'), el('table', {},
      el('thead', {}, el('tr', {}, ['Name', 'Match', 'Mode', 'Topic', 'Payload', 'QoS', 'Matched'].map(h => el('th', {}, h)))),
      el('tbody', {}, r.rules.map(x => el('tr', {},
        el('td', {}, el('b', {}, x.name), x.enabled ? null : el('div', { class: 'muted' }, 'disabled'),
          el('div', { class: 'muted mono' }, x.file)),
        el('td', {}, Object.entries(x.match).map(([k, v]) => el('div', {}, el('span', { class: 'tag' }, k), el('code', {}, show(v))))),
        el('td', {}, x.mode), el('td', {}, el('code', {}, x.topic)), el('td', {}, x.payload),
        el('td', {}, x.qos, x.retain ? ' · retain' : ''),
        el('td', {}, x.matched.length ? x.matched.map(m => el('div', { class: 'mono' },
          el('a', { href: '#/device/' + encodeURIComponent(m.device) }, m.device), m.path)) :
          el('span', { class: 'muted' }, 'nothing'))))))),
    el('div', { class: 'card' }, el('h2', {}, 'Commands'), el('table', {},
      el('thead', {}, el('tr', {}, ['Name', 'Topic', 'Method', 'Allows'].map(h => el('th', {}, h)))),
      el('tbody', {}, r.commands.map(c => el('tr', {}, el('td', {}, c.name),
        el('td', {}, el('code', {}, c.topic)), el('td', {}, c.method),
        el('td', {}, el('code', {}, `device ${c.allow.device}, path ${c.allow.path}`))))))));
}

// ---- health -------------------------------------------------------------------------------

async function pageHealth() {
  const h = await api('/api/health');
  state.rate = h.rate.map(([t, n, p]) => ({ t, notifications: n, published: p }));
  const s = h.stats;
  const dropped = Object.entries(s.dropped || {}).filter(([, n]) => n > 0);
  const stat = (k, v, id) => el('div', { class: 'stat' }, el('div', { class: 'k' }, k), el('div', { class: 'v', id }, v));
  render(
    el('h1', {}, 'Health'),
    el('p', { class: 'sub' }, 'What the gateway is doing now · updates every second'),
    el('div', { class: 'grid' },
      stat('Broker', h.health.mqtt_connected ? 'connected' : 'away', 'h-broker'),
      stat('Devices online', `${h.health.devices_online} / ${h.health.devices}`, 'h-devices'),
      stat('Outbox', h.outbox, 'h-outbox'),
      stat('Uptime', duration(h.health.uptime_s), 'h-uptime'),
      stat('Published', s.published),
      stat('DTLS handshakes / failed', `${s.coap.dtls_handshakes} / ${s.coap.dtls_failures}`)),
    el('div', { class: 'card' }, el('h2', {}, 'Messages per second, last minutes'),
      el('canvas', { id: 'chart', class: 'chart' }),
      el('div', { class: 'legend' }, el('span', {}, el('i', { class: 'pub' }), 'published to MQTT'),
        el('span', {}, el('i', { class: 'not' }), 'notifications from devices'))),
    el('div', { class: 'cols' },
      el('div', { class: 'card' }, el('h2', {}, 'Dropped, by reason'),
        dropped.length ? el('table', {}, el('tbody', {}, dropped.map(([k, n]) => el('tr', {}, el('td', { class: 'mono' }, k), el('td', {}, n)))))
          : el('p', { class: 'muted' }, 'Nothing dropped.')),
      el('div', { class: 'card' }, el('h2', {}, 'CoAP and the page'), el('table', {}, el('tbody', {},
        [['requests', s.coap.requests], ['responses', s.coap.responses], ['notifications', s.coap.notifications],
         ['failures', s.coap.failures], ['live streams', h.web.stream_clients],
         ['stream events dropped (slow browsers)', h.web.events_dropped]].map(([k, v]) =>
          el('tr', {}, el('td', {}, k), el('td', {}, v))))))));
  drawChart();
}

function drawChart() {
  const c = document.getElementById('chart');
  if (!c) return;
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext('2d');
  g.scale(dpr, dpr);
  const pad = { l: 44, r: 10, t: 10, b: 22 };
  const data = state.rate.slice(-300);
  const max = Math.max(5, ...data.map(d => Math.max(d.published, d.notifications)));
  const top = Math.pow(10, Math.floor(Math.log10(max))) * Math.ceil(max / Math.pow(10, Math.floor(Math.log10(max))));
  const x = i => pad.l + (w - pad.l - pad.r) * (i / 299);
  const y = v => pad.t + (h - pad.t - pad.b) * (1 - v / top);
  g.strokeStyle = '#e3e7ef'; g.fillStyle = '#6b7588'; g.font = '11px system-ui'; g.lineWidth = 1;
  for (let k = 0; k <= 4; ++k) {
    const v = top * k / 4;
    g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(w - pad.r, y(v)); g.stroke();
    g.fillText(String(Math.round(v)), 4, y(v) + 4);
  }
  g.fillText('-5 min', pad.l, h - 6); g.fillText('now', w - pad.r - 22, h - 6);
  const off = 300 - data.length;
  for (const [key, color] of [['notifications', '#1f9d55'], ['published', '#2f6fed']]) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    data.forEach((d, i) => (i ? g.lineTo : g.moveTo).call(g, x(off + i), y(d[key])));
    g.stroke();
  }
}

// ---- discovery --------------------------------------------------------------------------

async function pageDiscovery() {
  const d = await api('/api/discovery');
  const box = el('div', { class: 'result', id: 'discovery-result' });
  const list = el('div', { id: 'answered' });
  const showRound = last => {
    if (!last) { list.replaceChildren(el('p', { class: 'muted' }, 'No round since the gateway started.')); return; }
    if (last.status !== 'ok') { resultBox(box, false, last.error); list.replaceChildren(); return; }
    const names = last.data.devices || [];
    list.replaceChildren(el('p', { class: 'muted' }, `Round of ${new Date(last.time).toLocaleTimeString()}: ${names.length} answered`),
      el('ul', {}, names.map(n => el('li', {}, el('a', { href: '#/device/' + encodeURIComponent(n) }, n)))));
  };
  const start = async () => {
    box.className = 'result'; box.textContent = 'asking the network… (devices wait up to a few seconds before they answer)';
    const r = await api('/api/discover', {});
    if (r.status === 'ok') box.textContent = ''; else resultBox(box, false, r.error);
    r.time = Date.now(); showRound(r);
  };
  render(el('h1', {}, 'Discovery'),
    el('p', { class: 'sub' }, d.enabled ? 'Multicast /.well-known/core to the configured groups; new devices join on their own.'
      : 'Multicast discovery is off (coap.discovery.multicast is empty).'),
    el('div', { class: 'card' }, el('button', { class: 'primary', id: 'discover-btn', onclick: start }, 'Start a round'), box, list));
  showRound(d.last);
}

// ---- live updates -------------------------------------------------------------------------

function live() {
  const es = new EventSource('/api/events');
  const dot = document.getElementById('live'), text = document.getElementById('live-text');
  es.onopen = () => { dot.className = 'dot on'; text.textContent = 'live'; };
  es.onerror = () => { dot.className = 'dot off'; text.textContent = 'reconnecting…'; };
  es.addEventListener('device', e => onDevice(JSON.parse(e.data)));
  es.addEventListener('values', e => JSON.parse(e.data).forEach(onValue));
  es.addEventListener('renamed', e => {
    const r = JSON.parse(e.data);
    if (state.page === 'devices') route();
    else if (state.page === 'device' && state.arg === r.from) location.hash = '#/device/' + encodeURIComponent(r.to);
  });
  es.addEventListener('removed', () => { if (state.page === 'devices') route(); });
  es.addEventListener('rules', () => { if (state.page === 'rules') route(); });
  es.addEventListener('tick', e => onTick(JSON.parse(e.data)));
}

function onDevice(d) {
  if (state.page === 'devices') {
    const old = document.querySelector(`#devices tr[data-device="${CSS.escape(d.name)}"]`);
    const row = deviceRow(Object.assign({}, state.devices.get(d.name) || {}, d));
    state.devices.set(d.name, Object.assign(state.devices.get(d.name) || {}, d));
    if (old) old.replaceWith(row); else route();
  } else if (state.page === 'device' && state.arg === d.name) {
    const b = document.querySelector('main .row .badge.state');
    if (b) b.replaceWith(badge(d.online));
  }
}

function onValue(v) {
  if (state.page !== 'device' || state.arg !== v.device) return;
  const row = document.querySelector(`#resources tr[data-path="${CSS.escape(v.path)}"]`);
  if (!row) return;
  const cell = row.querySelector('.value');
  cell.textContent = show(v.value);
  cell.classList.remove('flash'); void cell.offsetWidth; cell.classList.add('flash');
  const t = row.querySelector('.vtime'); t.dataset.ms = v.time; t.textContent = ago(v.time);
}

function onTick(t) {
  state.rate.push({ t: t.t, notifications: t.notifications, published: t.published });
  if (state.rate.length > 300) state.rate.shift();
  if (state.page !== 'health') return;
  const set = (id, v) => { const e = document.getElementById(id); if (e) e.textContent = v; };
  set('h-broker', t.mqtt_connected ? 'connected' : 'away');
  set('h-devices', `${t.devices_online} / ${t.devices}`);
  set('h-outbox', t.outbox);
  set('h-uptime', duration(t.uptime_s));
  drawChart();
}

// ---- routing ----------------------------------------------------------------------------

async function route() {
  const [, page = 'devices', ...rest] = (location.hash || '#/devices').split('/');
  state.page = page; state.arg = rest.length ? decodeURIComponent(rest.join('/')) : null;
  document.querySelectorAll('nav a').forEach(a =>
    a.classList.toggle('active', a.dataset.page === page || (page === 'device' && a.dataset.page === 'devices')));
  const pages = { devices: pageDevices, device: () => pageDevice(state.arg), rules: pageRules,
    health: pageHealth, discovery: pageDiscovery };
  try { await (pages[page] || pageDevices)(); } catch (e) {
    render(el('p', { class: 'result error' }, String(e.message || e)));
  }
}

// Every 5 s: the "ago" texts, and the devices' counters and last-seen times.
setInterval(async () => {
  document.querySelectorAll('[data-ms]').forEach(e => {
    if (Number(e.dataset.ms)) e.textContent = ago(Number(e.dataset.ms));
  });
  if (state.page !== 'devices' || !document.getElementById('devices')) return;
  const list = await api('/api/devices').catch(() => null);
  const body = document.getElementById('devices');
  if (!list || !body || state.page !== 'devices') return;
  state.devices = new Map(list.map(d => [d.name, d]));
  body.replaceChildren(...list.map(deviceRow));
}, 5000);
window.addEventListener('hashchange', route);
window.addEventListener('resize', drawChart);
route();
live();
