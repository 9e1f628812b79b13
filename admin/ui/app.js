// unitgate console: polls the admin API of the gateway that served this page
// and draws what it answers. No framework, no build step, nothing loaded from
// elsewhere (the page's Content-Security-Policy forbids it). Every value from
// the API goes into the page as text (textContent, attributes), never as HTML.
'use strict';

(function () {
  const TOKEN_KEY = 'unitgate.admin.token';
  const POLL_MS = 2000;
  // Rates are kept for this long; the chart spans it.
  const WINDOW_MS = 5 * 60 * 1000;
  const STEPS = ['freezing', 'waiting_confirm', 'reassigning', 'unfreezing', 'done'];
  const PALETTE = ['#2f6db5', '#d9822b', '#3a9a5b', '#9b59b6', '#c0392b', '#16a2a2',
    '#7f6a00', '#d35f8d', '#5d6d7e', '#8e6c4b'];
  // A namespace name, not a location: nothing is fetched from it.
  const SVG_NS = 'http://www.w3.org/2000/svg';

  let token = '';
  let timer = null;
  let polling = false;
  let unitColours = {};
  let unitNames = [];
  const samples = []; // {t, units: {U: {req, err, cross}}}

  // ---- small DOM helpers ----

  function $(id) { return document.getElementById(id); }

  // h('td', {class: 'x'}, 'text', childNode, ...): children that are strings
  // become text nodes, null/undefined/false are skipped.
  function h(tag, attrs) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const k of Object.keys(attrs)) {
        const v = attrs[k];
        if (v === null || v === undefined || v === false) continue;
        if (k === 'onclick') el.addEventListener('click', v);
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (let i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach((c) => append(el, c)); return; }
    el.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }

  function s(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const k of Object.keys(attrs || {})) el.setAttribute(k, String(attrs[k]));
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === null || c === undefined) continue;
      el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function replace(id, content) {
    const el = $(id);
    el.textContent = '';
    append(el, content);
  }

  function badge(word, kind) { return h('span', { class: 'badge ' + (kind || word) }, word); }

  function swatch(unit) {
    const el = h('span', { class: 'swatch', 'aria-hidden': 'true' });
    el.style.backgroundColor = colourOf(unit); // CSSOM, allowed by the CSP
    return el;
  }

  function colourOf(unit) { return unitColours[unit] || '#999999'; }

  function fmt(v) {
    if (v === null || v === undefined) return '-';
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  function rate(x) {
    if (x >= 100) return x.toFixed(0);
    if (x >= 10) return x.toFixed(1);
    return x.toFixed(2);
  }

  function ago(unix) {
    if (!unix) return '-';
    const secs = Math.max(0, Math.round(Date.now() / 1000 - unix));
    return secs < 120 ? secs + ' s ago' : Math.round(secs / 60) + ' min ago';
  }

  function duration(secs) {
    if (secs === undefined || secs === null) return '-';
    if (secs < 120) return secs + ' s';
    if (secs < 7200) return Math.round(secs / 60) + ' min';
    if (secs < 172800) return (secs / 3600).toFixed(1) + ' h';
    return (secs / 86400).toFixed(1) + ' d';
  }

  // Fields of `obj` not in `known`, as "key value" chips: the API grows
  // (e.g. per-instance load-balancing fields) and the console shows what it
  // does not know rather than hiding it.
  function extras(obj, known) {
    if (!obj || typeof obj !== 'object') return null;
    const keys = Object.keys(obj).filter((k) => known.indexOf(k) < 0);
    if (!keys.length) return null;
    return h('span', { class: 'extras' },
      keys.map((k) => h('span', { class: 'extra' }, k.replace(/_/g, ' ') + ' ', h('b', null, fmt(obj[k])))));
  }

  // ---- the admin API ----

  class ApiError extends Error {
    constructor(status, code, message, errors) {
      super(message);
      this.status = status;
      this.code = code;
      this.errors = errors || [];
    }
    describe() {
      const head = (this.status ? this.status + ' ' : '') + this.code + ': ' + this.message;
      return this.errors.length ? head + ' — ' + this.errors.join('; ') : head;
    }
  }

  async function request(method, path, body, asText) {
    const opts = { method, headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' };
    if (!asText) opts.headers.Accept = 'application/json';
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, 'unreachable', 'the admin API cannot be reached (' + e.message + ')');
    }
    const text = await resp.text();
    if (asText && resp.ok) return text;
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      // The admin API answers errors as {error, message, errors}; anything
      // else (a proxy in between) is shown as its first line.
      const msg = (data && data.message) || (text.split('\n')[0] || '').slice(0, 200) || resp.statusText;
      throw new ApiError(resp.status, (data && data.error) || 'http_' + resp.status, msg, data && data.errors);
    }
    return data;
  }

  const api = {
    get: (p) => request('GET', '/admin/v1' + p),
    put: (p, b) => request('PUT', '/admin/v1' + p, b),
    post: (p, b) => request('POST', '/admin/v1' + p, b === undefined ? {} : b),
    metrics: () => request('GET', '/metrics', undefined, true),
  };

  // ---- banners ----

  // Two sources of errors: the last poll (replaced by the next one) and the
  // last action (kept until the next action succeeds, or a click on it).
  let pollError = '';
  let actionError = '';

  function drawErrors() {
    const el = $('error');
    el.textContent = '';
    [actionError, pollError].filter(Boolean).forEach((t) => el.appendChild(h('div', null, t)));
    el.hidden = !actionError && !pollError;
  }

  function showError(text) {
    pollError = text;
    drawErrors();
  }

  function showActionError(text) {
    actionError = text;
    drawErrors();
  }

  let noticeTimer = null;
  function notice(text) {
    const el = $('notice');
    el.textContent = text;
    el.hidden = !text;
    if (noticeTimer) clearTimeout(noticeTimer);
    if (text) noticeTimer = setTimeout(() => { el.hidden = true; }, 10000);
  }

  // ---- confirmation of destructive actions (an in-page dialog) ----

  function confirmAction(text, okLabel) {
    const dlg = $('confirm-dialog');
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel || 'Confirm';
    if (typeof dlg.showModal !== 'function') return Promise.resolve(window.confirm(text));
    return new Promise((resolve) => {
      const done = (ok) => {
        dlg.removeEventListener('close', onClose);
        resolve(ok);
      };
      const onClose = () => done(dlg.returnValue === 'ok');
      dlg.addEventListener('close', onClose);
      dlg.returnValue = 'cancel';
      dlg.showModal();
    });
  }

  async function act(what, fn) {
    try {
      const r = await fn();
      notice(what + ': done');
      showActionError('');
      await poll();
      return r;
    } catch (e) {
      notice('');
      showActionError(what + ' failed: ' + (e instanceof ApiError ? e.describe() : e.message));
      return null;
    }
  }

  // ---- panels ----

  function renderStatus(st) {
    const store = st.store || {};
    const reload = st.last_reload;
    replace('gateway', [
      h('span', null, 'gateway in unit ', h('b', null, fmt(st.unit))),
      h('span', null, 'version ', h('b', null, fmt(st.version))),
      h('span', null, 'epoch ', h('b', null, fmt(st.epoch))),
      h('span', null, 'config ', h('code', null, String(st.config_hash || '').slice(0, 12))),
      h('span', null, 'up ', h('b', null, duration(st.uptime_secs))),
      h('span', null, 'store ', h('b', null, fmt(store.kind)), ' ',
        store.connected === false ? badge('disconnected', 'bad') : badge('connected', 'good')),
      reload ? h('span', null, 'last reload ', badge(fmt(reload.result), reload.result === 'ok' ? 'good' : 'bad'),
        ' ' + ago(reload.at_unix)) : null,
    ]);
  }

  // unit -> [healthy, total] instances over every service, from /health.
  function instanceCounts(health) {
    const out = {};
    ((health && health.services) || []).forEach((svc) => (svc.units || []).forEach((u) => {
      const c = (out[u.unit] = out[u.unit] || [0, 0]);
      (u.instances || []).forEach((i) => { c[1] += 1; if (i.healthy !== false && !i.ejected) c[0] += 1; });
    }));
    return out;
  }

  function renderUnits(units, status, health) {
    if (!Array.isArray(units)) { replace('units', h('p', { class: 'muted' }, 'no units')); return; }
    const mine = status && status.unit;
    const counts = instanceCounts(health);
    const known = ['name', 'state', 'failover', 'slots'];
    const anyExtra = units.some((u) => extras(u, known));
    const rows = units.map((u) => {
      const state = u.state || 'active';
      const btn = (label, target, danger) => h('button', {
        type: 'button',
        class: danger ? 'danger' : null,
        disabled: state === target,
        'data-unit': u.name,
        'data-state': target,
        onclick: () => setUnitState(u, target),
      }, label);
      return h('tr', { 'data-unit': u.name },
        h('td', null, swatch(u.name), h('b', null, u.name), u.name === mine ? h('span', { class: 'muted' }, ' (this gateway)') : null),
        h('td', null, badge(state, state)),
        h('td', null, (u.failover || []).length ? u.failover.join(' → ') : h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'slots' }, (u.slots || []).length
          ? u.slots.map((r, i) => [i ? ', ' : '', h('span', { class: 'range' }, r)])
          : h('span', { class: 'muted' }, 'no slots')),
        h('td', { class: counts[u.name] && counts[u.name][0] < counts[u.name][1] ? 'bad' : null },
          counts[u.name] ? counts[u.name][0] + ' of ' + counts[u.name][1] + ' serving' : '-'),
        h('td', { class: 'buttons' },
          btn('Drain', 'draining', true), btn('Mark down', 'down', true), btn('Activate', 'active', false)),
        anyExtra ? h('td', null, extras(u, known)) : null);
    });
    replace('units', h('table', null,
      h('thead', null, h('tr', null, h('th', null, 'unit'), h('th', null, 'state'),
        h('th', null, 'failover'), h('th', null, 'slots'), h('th', null, 'instances'), h('th', null, 'actions'),
        anyExtra ? h('th', null, '') : null)),
      h('tbody', null, rows)));
  }

  // `draining` and `down` both take the unit out of every candidate list
  // on the next request; its users are served by its failover units.
  async function setUnitState(unit, state) {
    const name = unit.name;
    if (state !== 'active') {
      const to = (unit.failover || []).length ? 'its failover units (' + unit.failover.join(', ') + ')'
        : 'no other unit (it has no failover)';
      const what = (state === 'draining' ? 'Drain unit ' : 'Mark unit ') + name + (state === 'down' ? ' down' : '') +
        '? From the next request on, its users are served by ' + to + ' until it is activated again.';
      if (!(await confirmAction(what, state === 'draining' ? 'Drain ' + name : 'Mark ' + name + ' down'))) return;
    }
    await act('unit ' + name + ' → ' + state, () => api.put('/units/' + encodeURIComponent(name), { state }));
  }

  // "a-b" or "a" -> [a, b]; null when garbled.
  function parseRange(r) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(String(r));
    if (!m) return null;
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    return a <= b ? [a, b] : null;
  }

  function count(ranges) {
    return ranges.reduce((n, r) => { const p = parseRange(r); return p ? n + p[1] - p[0] + 1 : n; }, 0);
  }

  function renderShardmap(map, slots) {
    const total = slots || 10000;
    const W = 1000;
    const H = 34;
    const scale = (x) => (x / total) * W;
    const bar = s('svg', { viewBox: '0 0 ' + W + ' ' + (H + 24), class: 'shardbar', role: 'img',
      'aria-label': 'shard map over ' + total + ' slots' });
    const defs = s('defs', null,
      s('pattern', { id: 'frozen-hatch', width: 8, height: 8, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
        s('rect', { width: 8, height: 8, fill: 'rgba(0,0,0,0.35)' }),
        s('line', { x1: 0, y1: 0, x2: 0, y2: 8, stroke: '#ffffff', 'stroke-width': 3 })));
    bar.appendChild(defs);
    bar.appendChild(s('rect', { x: 0, y: 0, width: W, height: H, fill: '#dddddd' },
      s('title', null, 'unassigned')));
    const owned = [];
    const labels = [];
    Object.keys(map.units || {}).forEach((unit) => {
      (map.units[unit] || []).forEach((r) => {
        const p = parseRange(r);
        if (!p) return;
        owned.push([p[0], p[1], unit]);
        const rect = s('rect', { x: scale(p[0]), y: 0, width: Math.max(scale(p[1] + 1) - scale(p[0]), 1), height: H,
          fill: colourOf(unit), class: 'slots', 'data-unit': unit },
        s('title', null, 'unit ' + unit + ': slots ' + r + ' (' + (p[1] - p[0] + 1) + ')'));
        bar.appendChild(rect);
        if (scale(p[1] + 1) - scale(p[0]) > 40) labels.push([(scale(p[0]) + scale(p[1] + 1)) / 2, unit]);
      });
    });
    const frozen = map.forbidden_writes || [];
    frozen.forEach((r) => {
      const p = parseRange(r);
      if (!p) return;
      bar.appendChild(s('rect', { x: scale(p[0]), y: 0, width: Math.max(scale(p[1] + 1) - scale(p[0]), 3), height: H,
        fill: 'url(#frozen-hatch)', class: 'frozen' }, s('title', null, 'frozen (writes refused): slots ' + r)));
    });
    // Unit names on the bar go over the frozen marks, so both stay readable.
    labels.forEach(([x, unit]) => bar.appendChild(s('text', { x, y: H / 2 + 6, class: 'barlabel' }, unit)));
    [0, 0.25, 0.5, 0.75, 1].forEach((f) => {
      const x = f * W;
      const label = f === 1 ? String(total - 1) : String(Math.round(f * total));
      bar.appendChild(s('text', { x: Math.min(Math.max(x, 14), W - 22), y: H + 19, class: 'tick' }, label));
    });

    // The same as text: a legend that does not depend on colour.
    const legend = h('ul', { class: 'legend' },
      Object.keys(map.units || {}).map((unit) => {
        const ranges = map.units[unit] || [];
        return h('li', { 'data-unit': unit }, swatch(unit), h('b', null, unit), ': ',
          ranges.length ? 'slots ' + ranges.join(', ') + ' (' + count(ranges) + ' slots)' : 'no slots');
      }),
      h('li', { class: 'frozen-legend' }, h('span', { class: 'swatch hatch', 'aria-hidden': 'true' }),
        h('b', null, 'frozen'), ' (writes refused): ',
        frozen.length ? frozen.join(', ') + ' (' + count(frozen) + ' slots)' : 'none'));
    const gaps = [];
    owned.sort((a, b) => a[0] - b[0]);
    let next = 0;
    owned.forEach(([a, b]) => { if (a > next) gaps.push(next + '-' + (a - 1)); next = Math.max(next, b + 1); });
    if (next < total) gaps.push(next + '-' + (total - 1));
    const overrides = Object.keys(map.overrides || {});
    replace('shardmap', [
      h('p', { class: 'facts' }, h('span', null, 'epoch ', h('b', null, fmt(map.epoch))),
        h('span', null, h('b', null, String(total)), ' slots'),
        overrides.length ? h('span', null, h('b', null, String(overrides.length)), ' key override(s)') : null),
      bar,
      legend,
      gaps.length ? h('p', { class: 'bad' }, 'unassigned slots: ' + gaps.join(', ')) : null,
      overrides.length ? h('p', { class: 'muted small' }, 'overrides: ' +
        overrides.slice(0, 20).map((k) => k + ' → ' + map.overrides[k]).join(', ') +
        (overrides.length > 20 ? ' …' : '')) : null,
    ]);
  }

  function renderHealth(health) {
    const services = (health && health.services) || [];
    const blocks = services.map((svc) => {
      const rows = (svc.units || []).map((u) => {
        const attempts = u.attempts || {};
        const instances = (u.instances || []).map((inst) => {
          const healthy = inst.healthy !== false;
          return h('li', { class: 'instance', 'data-instance': inst.instance },
            h('code', null, fmt(inst.instance)), ' ',
            badge(healthy ? 'healthy' : 'unhealthy'), ' ',
            inst.ejected ? badge('ejected', 'bad') : badge('not ejected', 'quiet'),
            extras(inst, ['instance', 'healthy', 'ejected']));
        });
        const circuit = u.circuit || 'none';
        return h('tr', { 'data-service': svc.service, 'data-unit': u.unit },
          h('td', null, swatch(u.unit), h('b', null, fmt(u.unit))),
          h('td', null, badge('circuit ' + circuit.replace('_', '-'),
            circuit === 'open' ? 'bad' : circuit === 'half_open' ? 'warn' : 'quiet')),
          h('td', { class: 'small' }, Object.keys(attempts).map((k) => h('span', { class: 'kv' }, k.replace(/_/g, ' ') + ' ', h('b', null, fmt(attempts[k]))))),
          h('td', null, h('ul', { class: 'instances' }, instances)),
          h('td', null, extras(u, ['unit', 'circuit', 'attempts', 'instances'])));
      });
      return h('div', { class: 'service', 'data-service': svc.service },
        h('h3', null, 'service ', svc.service, extras(svc, ['service', 'units'])),
        h('table', null,
          h('thead', null, h('tr', null, h('th', null, 'unit'), h('th', null, 'circuit'),
            h('th', null, 'attempts'), h('th', null, 'instances (health, ejection)'), h('th', null, ''))),
          h('tbody', null, rows)));
    });
    const routes = ((health && health.routes) || []).map((r) => {
      const degraded = r.degraded || {};
      const nonzero = Object.keys(degraded).filter((k) => degraded[k]);
      return h('tr', null, h('td', null, fmt(r.route)), h('td', null, fmt(r.inflight)),
        h('td', null, nonzero.length ? nonzero.map((k) => k + ' ' + degraded[k]).join(', ') : 'none'),
        h('td', null, extras(r, ['route', 'inflight', 'degraded'])));
    });
    replace('health', [
      blocks.length ? blocks : h('p', { class: 'muted' }, 'no services'),
      routes.length ? h('details', { class: 'routes' }, h('summary', null, 'routes: requests in flight, degraded answers'),
        h('table', null, h('thead', null, h('tr', null, h('th', null, 'route'), h('th', null, 'in flight'),
          h('th', null, 'degraded'), h('th', null, ''))), h('tbody', null, routes))) : null,
    ]);
  }

  // ---- rates from successive /metrics scrapes ----

  function parseMetrics(text) {
    const out = [];
    text.split('\n').forEach((line) => {
      if (!line || line[0] === '#') return;
      const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) return;
      const labels = {};
      const re = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2] || '')) !== null) labels[l[1]] = l[2];
      out.push({ name: m[1], labels, value: Number(m[3]) });
    });
    return out;
  }

  // Per unit: requests served by it (a request no unit served counts for its
  // home unit), errors among them (5xx, or no response), and crossings into it.
  function totals(series) {
    const units = {};
    const at = (u) => (units[u] = units[u] || { req: 0, err: 0, cross: 0 });
    series.forEach((x) => {
      if (x.name === 'unitgate_requests_total') {
        const u = x.labels.served_unit || x.labels.home_unit;
        if (!u) return;
        const code = Number(x.labels.code);
        at(u).req += x.value;
        if (code >= 500 || code === 0) at(u).err += x.value;
      } else if (x.name === 'unitgate_cross_unit_total' && x.labels.to) {
        at(x.labels.to).cross += x.value;
      }
    });
    return units;
  }

  function addSample(text) {
    const now = Date.now();
    samples.push({ t: now, units: totals(parseMetrics(text)) });
    while (samples.length > 2 && now - samples[0].t > WINDOW_MS) samples.shift();
  }

  // Rates between successive samples, per unit: [{t, req, err, cross}].
  function rates(unit) {
    const out = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1];
      const b = samples[i];
      const dt = (b.t - a.t) / 1000;
      if (dt <= 0) continue;
      const x = a.units[unit] || { req: 0, err: 0, cross: 0 };
      const y = b.units[unit] || { req: 0, err: 0, cross: 0 };
      // A restarted gateway starts its counters again: no negative rates.
      const d = (k) => Math.max(0, y[k] - x[k]) / dt;
      out.push({ t: b.t, req: d('req'), err: d('err'), cross: d('cross') });
    }
    return out;
  }

  function chart(points) {
    const W = 320;
    const H = 64;
    const max = Math.max(1, ...points.map((p) => Math.max(p.req, p.err, p.cross)));
    const t1 = points.length ? points[points.length - 1].t : Date.now();
    // The axis spans what has been measured, up to the whole window.
    const span = Math.min(WINDOW_MS, Math.max(2 * POLL_MS, t1 - samples[0].t));
    const t0 = t1 - span;
    const x = (t) => ((t - t0) / span) * W;
    const y = (v) => H - (v / max) * (H - 4);
    const svg = s('svg', { viewBox: '0 0 ' + W + ' ' + (H + 14), class: 'chart', role: 'img',
      'aria-label': 'rates over the last ' + Math.round(span / 1000) + ' seconds' });
    svg.appendChild(s('rect', { x: 0, y: 0, width: W, height: H, class: 'chartbg' }));
    [['req', 'line-req'], ['err', 'line-err'], ['cross', 'line-cross']].forEach(([k, cls]) => {
      if (points.length < 1) return;
      const d = points.map((p, i) => (i ? 'L' : 'M') + x(p.t).toFixed(1) + ' ' + y(p[k]).toFixed(1)).join(' ');
      svg.appendChild(s('path', { d, class: cls }));
    });
    svg.appendChild(s('text', { x: 2, y: 10, class: 'tick' }, rate(max) + '/s'));
    svg.appendChild(s('text', { x: 2, y: H + 12, class: 'tick' },
      span >= 120000 ? '-' + Math.round(span / 60000) + ' min' : '-' + Math.round(span / 1000) + ' s'));
    svg.appendChild(s('text', { x: W - 24, y: H + 12, class: 'tick' }, 'now'));
    return svg;
  }

  function renderRates() {
    const last = samples.length ? samples[samples.length - 1].units : {};
    const names = unitNames.slice();
    Object.keys(last).forEach((u) => { if (names.indexOf(u) < 0) names.push(u); });
    if (samples.length < 2) {
      replace('rates', h('p', { class: 'muted' }, 'measuring: rates appear after the second scrape (every ' + POLL_MS / 1000 + ' s)'));
      return;
    }
    const rows = names.map((u) => {
      const pts = rates(u);
      const now = pts.length ? pts[pts.length - 1] : { req: 0, err: 0, cross: 0 };
      return h('div', { class: 'rate-row', 'data-unit': u },
        h('div', { class: 'rate-text' }, h('div', null, swatch(u), h('b', null, 'unit ' + u)),
          h('div', { class: 'small' }, h('span', { class: 'key-req' }, 'requests ' + rate(now.req) + '/s')),
          h('div', { class: 'small' }, h('span', { class: 'key-err' }, 'errors ' + rate(now.err) + '/s')),
          h('div', { class: 'small' }, h('span', { class: 'key-cross' }, 'crossing ' + rate(now.cross) + '/s'))),
        chart(pts));
    });
    replace('rates', [rows,
      h('p', { class: 'muted small' }, 'solid: requests served · dashed: errors (5xx or no answer) · dotted: crossing in from another unit')]);
  }

  function renderFleet(fleet) {
    const gws = (fleet && fleet.gateways) || [];
    const rows = gws.map((g) => h('tr', { 'data-gateway': g.id },
      h('td', null, h('code', null, fmt(g.id))),
      h('td', null, swatch(g.unit), fmt(g.unit)),
      h('td', null, fmt(g.epoch)),
      h('td', null, g.in_sync ? badge('in sync', 'good') : badge('lagging', 'bad')),
      h('td', null, h('code', null, String(g.config_hash || '').slice(0, 12))),
      h('td', null, fmt(g.version)),
      h('td', { class: 'small' }, ago(g.updated_unix)),
      h('td', null, extras(g, ['id', 'unit', 'epoch', 'in_sync', 'config_hash', 'version', 'updated_unix', 'revision', 'listen', 'admin', 'ready']))));
    replace('fleet', [
      h('p', { class: 'facts' },
        h('span', null, 'store ', h('b', null, fmt(fleet.store)), fleet.store === 'file' ? ' (a fleet of one)' : ''),
        h('span', null, fleet.connected ? badge('connected', 'good') : badge('disconnected', 'bad')),
        h('span', null, 'epoch ', h('b', null, fmt(fleet.epoch))),
        fleet.store === 'etcd' ? h('span', null, 'revision ', h('b', null, fmt(fleet.revision))) : null,
        h('span', null, h('b', null, String(gws.length)), ' gateway(s)')),
      h('table', null,
        h('thead', null, h('tr', null, ['gateway', 'unit', 'epoch', 'sync', 'config', 'version', 'reported', ''].map((t) => h('th', null, t)))),
        h('tbody', null, rows)),
    ]);
  }

  function steps(m) {
    const at = STEPS.indexOf(m.state);
    return h('ol', { class: 'steps' }, STEPS.map((step, i) => {
      let cls = 'todo';
      if (m.state === 'done' || i < at) cls = 'past';
      else if (i === at) cls = 'now';
      return h('li', { class: cls }, (cls === 'now' ? '▶ ' : cls === 'past' ? '✓ ' : '') + step.replace('_', ' '));
    }));
  }

  function renderMigrations(list) {
    const all = Array.isArray(list) ? list.slice().reverse() : [];
    if (!all.length) { replace('migrations', h('p', { class: 'muted' }, 'no migrations yet')); return; }
    const rows = all.map((m) => {
      const terminal = ['done', 'aborted', 'failed'].indexOf(m.state) >= 0;
      const from = Object.keys(m.from || {}).map((u) => u + ' (' + (m.from[u] || []).join(', ') + ')').join(', ');
      const confirmMode = typeof m.confirm === 'object' && m.confirm ? 'url ' + m.confirm.url : fmt(m.confirm);
      const kind = m.state === 'failed' ? 'bad' : m.state === 'aborted' ? 'warn' : m.state === 'done' ? 'good' : 'now';
      return h('tr', { 'data-migration': m.id },
        h('td', null, h('code', null, fmt(m.id))),
        h('td', null, (m.slots || []).join(', ')),
        h('td', null, from || '-', ' → ', h('b', null, fmt(m.to))),
        h('td', null, badge(fmt(m.state), kind), m.state === 'aborted' || m.state === 'failed' ? null : steps(m),
          m.error ? h('div', { class: 'bad small' }, 'error: ' + m.error) : null,
          (m.waiting_for || []).length ? h('div', { class: 'small' }, 'waiting for: ' + m.waiting_for.join(', ')) : null),
        h('td', { class: 'small' }, 'confirm ' + confirmMode, h('br'), 'epochs ' + ((m.epochs || []).join(', ') || '-'),
          h('br'), ago(m.updated_unix)),
        h('td', { class: 'buttons' },
          m.state === 'waiting_confirm' && !m.confirmed ? h('button', { type: 'button', onclick: () => confirmMigration(m) }, 'Confirm') : null,
          !terminal && !m.aborting ? h('button', { type: 'button', class: 'danger', onclick: () => abortMigration(m) }, 'Abort') : null));
    });
    replace('migrations', h('table', null,
      h('thead', null, h('tr', null, ['id', 'slots', 'from → to', 'state and steps', 'details', 'actions'].map((t) => h('th', null, t)))),
      h('tbody', null, rows)));
  }

  async function confirmMigration(m) {
    const text = 'Confirm migration ' + m.id + '? Slots ' + (m.slots || []).join(', ') + ' move to unit ' + m.to +
      '. Confirm only once their data has been replicated there.';
    if (!(await confirmAction(text, 'Confirm migration'))) return;
    await act('confirm ' + m.id, () => api.post('/migrations/' + encodeURIComponent(m.id) + '/confirm'));
  }

  async function abortMigration(m) {
    if (!(await confirmAction('Abort migration ' + m.id + '? The freeze is lifted and the slots stay where they are.', 'Abort migration'))) return;
    await act('abort ' + m.id, () => api.post('/migrations/' + encodeURIComponent(m.id) + '/abort'));
  }

  async function startMigration(ev) {
    ev.preventDefault();
    const slots = $('mig-slots').value.split(/[\s,]+/).filter(Boolean);
    const to = $('mig-to').value;
    const mode = $('mig-confirm').value;
    const confirm = mode === 'url' ? { url: $('mig-url').value.trim() } : mode;
    if (!slots.length || !to) { showActionError('give the slots to move and the unit to move them to'); return; }
    const text = 'Move slots ' + slots.join(', ') + ' to unit ' + to + '? Writes to them are refused (503) while they are frozen.';
    if (!(await confirmAction(text, 'Start migration'))) return;
    const r = await act('start migration', () => api.post('/migrations', { slots, to, confirm }));
    if (r) $('mig-slots').value = '';
  }

  function fillUnitSelect(units) {
    const sel = $('mig-to');
    const names = (units || []).map((u) => u.name);
    const have = Array.from(sel.options).map((o) => o.value);
    if (names.join('\n') === have.join('\n')) return;
    const keep = sel.value;
    sel.textContent = '';
    names.forEach((n) => sel.appendChild(h('option', { value: n }, n)));
    if (names.indexOf(keep) >= 0) sel.value = keep;
  }

  // ---- the poll loop ----

  function section(id, result, render) {
    if (result.status === 'fulfilled') {
      render(result.value);
      return null;
    }
    const e = result.reason;
    const text = e instanceof ApiError ? e.describe() : String(e && e.message || e);
    replace(id, h('p', { class: 'bad' }, text));
    return e;
  }

  async function poll() {
    if (!token || polling) return;
    polling = true;
    try {
      const [status, units, shardmap, config, health, fleet, migrations, metrics] = await Promise.allSettled([
        api.get('/status'), api.get('/units'), api.get('/shardmap'), api.get('/config'),
        api.get('/health'), api.get('/fleet'), api.get('/migrations'), api.metrics(),
      ]);
      const all = [status, units, shardmap, config, health, fleet, migrations, metrics];
      const unauthorized = all.find((r) => r.status === 'rejected' && r.reason && r.reason.status === 401);
      if (unauthorized) {
        showError(unauthorized.reason.describe() + ' — enter the admin token');
        setConnected(false);
        return;
      }
      setConnected(true);
      if (units.status === 'fulfilled' && Array.isArray(units.value)) {
        unitNames = units.value.map((u) => u.name);
        unitNames.forEach((n, i) => { unitColours[n] = PALETTE[i % PALETTE.length]; });
        fillUnitSelect(units.value);
      }
      const errors = [];
      const note = (e) => { if (e) errors.push(e instanceof ApiError ? e.describe() : String(e)); };
      note(section('gateway', status, renderStatus));
      note(section('units', units, (u) => renderUnits(u, status.value, health.value)));
      const slots = config.status === 'fulfilled' && config.value && config.value.routing ? config.value.routing.slots : null;
      note(section('shardmap', shardmap, (m) => renderShardmap(m, slots)));
      note(section('health', health, renderHealth));
      note(section('fleet', fleet, renderFleet));
      note(section('migrations', migrations, renderMigrations));
      if (metrics.status === 'fulfilled') addSample(metrics.value);
      note(section('rates', metrics, renderRates));
      if (errors.length) showError(errors[0]);
      else showError('');
      $('updated').textContent = 'updated ' + new Date().toTimeString().slice(0, 8);
    } finally {
      polling = false;
    }
  }

  function setConnected(on) {
    $('login').hidden = on;
    $('logout').hidden = !on;
    document.body.classList.toggle('connected', on);
  }

  function start() {
    if (timer) clearInterval(timer);
    poll();
    timer = setInterval(poll, POLL_MS);
  }

  // `#token=...` in the URL is taken once into sessionStorage (gone when the
  // tab closes, never sent as a cookie) and removed from the address bar.
  function readToken() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash || '');
    if (m) {
      try { sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1])); } catch (_) { /* storage off */ }
      token = decodeURIComponent(m[1]);
      history.replaceState(null, '', location.pathname + location.search);
      return token;
    }
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login').addEventListener('submit', (ev) => {
      ev.preventDefault();
      token = $('token-input').value.trim();
      $('token-input').value = '';
      try { sessionStorage.setItem(TOKEN_KEY, token); } catch (_) { /* storage off */ }
      showError('');
      start();
    });
    $('logout').addEventListener('click', () => {
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage off */ }
      token = '';
      if (timer) clearInterval(timer);
      setConnected(false);
      notice('token forgotten');
    });
    $('migration-form').addEventListener('submit', startMigration);
    $('error').addEventListener('click', () => showActionError(''));
    $('mig-confirm').addEventListener('change', () => { $('mig-url').hidden = $('mig-confirm').value !== 'url'; });
    $('confirm-ok').addEventListener('click', (ev) => { ev.preventDefault(); $('confirm-dialog').close('ok'); });
    $('confirm-cancel').addEventListener('click', (ev) => { ev.preventDefault(); $('confirm-dialog').close('cancel'); });
    token = readToken();
    if (token) start();
    else { setConnected(false); showError('enter the admin token (admin.token in the config) to connect'); }
  });
}());
