// octet dashboard: reads the broker's Server-Sent Events feed and draws it. No dependencies.
'use strict';
(() => {
  const token = new URLSearchParams(location.search).get('token') || '';
  const $ = (id) => document.getElementById(id);
  let points = []; // per-second points, oldest first
  let capacity = 300;
  let intervalMs = 1000;

  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  const fmtRate = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
  const fmtMs = (ms) => (ms >= 1000 ? `${+(ms / 1000).toPrecision(3)} s` : `${+ms.toPrecision(3)} ms`);
  const fmtBound = (b) => (b ? `${b.over ? '>' : '≤'} ${fmtMs(b.le_ms)}` : '–');
  const fmtSpan = (ms) => (ms >= 60000 ? `${Math.round(ms / 60000)} min` : `${Math.round(ms / 1000)} s`);

  function setText(id, text) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }

  function setStatus(state, text) {
    const el = $('status');
    el.dataset.state = state;
    el.textContent = text;
  }

  // Rounds up to 1, 2 or 5 times a power of ten.
  function niceMax(v) {
    if (v <= 1) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // Draws `series` ([{key, color}]) of `points` on `canvas`, right edge = newest point.
  function draw(canvas, series) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 44;
    const right = 8;
    const top = 8;
    const bottom = 20;
    const pw = w - left - right;
    const ph = h - top - bottom;
    const span = (capacity - 1) * intervalMs;
    const end = points.length ? points[points.length - 1].t : Date.now();
    const start = end - span;
    let max = 0;
    for (const p of points) for (const s of series) max = Math.max(max, p[s.key]);
    max = niceMax(max);
    const x = (t) => left + ((t - start) / span) * pw;
    const y = (v) => top + ph - (v / max) * ph;

    ctx.font = `11px ${css('--font')}`;
    ctx.lineWidth = 1;
    ctx.strokeStyle = css('--grid');
    ctx.fillStyle = css('--muted');
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(left + pw, yy);
      ctx.stroke();
      ctx.fillText(+v.toPrecision(3), left - 6, yy);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const minutes = Math.round(span / 60000);
    for (let m = minutes; m >= 0; m--) {
      const xx = x(end - m * 60000);
      ctx.fillText(m === 0 ? 'now' : `−${m} min`, Math.min(Math.max(xx, left + 16), left + pw - 12), top + ph + 5);
    }

    ctx.lineWidth = 1.75;
    ctx.lineJoin = 'round';
    for (const s of series) {
      ctx.strokeStyle = css(s.color);
      ctx.beginPath();
      let first = true;
      for (const p of points) {
        if (p.t < start) continue;
        if (first) ctx.moveTo(x(p.t), y(p[s.key]));
        else ctx.lineTo(x(p.t), y(p[s.key]));
        first = false;
      }
      ctx.stroke();
    }
  }

  function drawCharts() {
    draw($('rates'), [
      { key: 'deliveries_per_s', color: '--del' },
      { key: 'messages_per_s', color: '--msg' },
      { key: 'errors_per_s', color: '--err' },
    ]);
    draw($('online'), [
      { key: 'connections', color: '--conn' },
      { key: 'persons', color: '--pers' },
    ]);
    let peak = 0;
    for (const p of points) peak = Math.max(peak, p.messages_per_s, p.deliveries_per_s);
    setText('rate-peak', fmtRate(peak));
    for (const el of document.querySelectorAll('.span-label')) el.textContent = fmtSpan((capacity - 1) * intervalMs);
  }

  function showErrors(list) {
    const body = $('top-errors');
    const rows = list.map((e) => {
      const tr = document.createElement('tr');
      tr.dataset.code = e.code;
      const code = document.createElement('td');
      code.textContent = e.code;
      const count = document.createElement('td');
      count.textContent = String(e.count);
      tr.append(code, count);
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement('tr');
      tr.className = 'none';
      const td = document.createElement('td');
      td.colSpan = 2;
      td.textContent = 'none yet';
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function show(s) {
    setText('connections', String(s.connections));
    setText('devices', String(s.devices));
    setText('persons', String(s.persons));
    setText('msg-rate', fmtRate(s.point ? s.point.messages_per_s : 0));
    setText('del-rate', fmtRate(s.point ? s.point.deliveries_per_s : 0));
    setText('msg-total', String(s.messages_total));
    setText('del-total', String(s.deliveries_total));
    setText('errors-total', String(s.errors_total));
    setText('p50', fmtBound(s.latency.p50));
    setText('p99', fmtBound(s.latency.p99));
    setText('lat-p50', fmtBound(s.latency.p50));
    setText('lat-p99', fmtBound(s.latency.p99));
    setText('lat-count', String(s.latency.count));
    setText('lat-window', String(s.latency.window_s));
    setText('updated', `updated ${new Date(s.t).toLocaleTimeString()}`);
    showErrors(s.top_errors);
  }

  const events = new EventSource(`dashboard/events?token=${encodeURIComponent(token)}`);
  events.addEventListener('open', () => setStatus('live', 'live'));
  events.addEventListener('error', () => {
    if (events.readyState === EventSource.CLOSED) setStatus('down', 'disconnected: reload with ?token=<admin token>');
    else setStatus('connecting', 'reconnecting…');
  });
  events.addEventListener('history', (e) => {
    const h = JSON.parse(e.data);
    capacity = h.capacity;
    intervalMs = h.interval_ms;
    points = h.points;
    drawCharts();
  });
  events.addEventListener('snapshot', (e) => {
    const s = JSON.parse(e.data);
    setStatus('live', 'live');
    const last = points[points.length - 1];
    if (s.point && (!last || s.point.t > last.t)) {
      points.push(s.point);
      if (points.length > capacity) points.splice(0, points.length - capacity);
    }
    show(s);
    drawCharts();
  });
  window.addEventListener('resize', drawCharts);
})();
