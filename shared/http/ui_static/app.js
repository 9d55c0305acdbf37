// The output browser. Plain JavaScript, no build step, no third-party code.
// It reads the API with the key kept in this tab's sessionStorage (sent as x-functions-key)
// and never writes the key into a URL: download and image links are read-only SAS URLs.
(() => {
  'use strict';

  const KEY_STORAGE = 'batchOutputs.key';
  const POLL_MS = 3000;
  const LOG_TAIL_BYTES = 8192;
  const LINK_FETCHES = 6;           // SAS links fetched at once
  const PAGE = { tasks: 100, previews: 60, outputs: 100 };

  const main = document.getElementById('main');
  const statusEl = document.getElementById('status');
  const crumbsEl = document.getElementById('crumbs');
  const signOut = document.getElementById('sign-out');

  // -- the key -----------------------------------------------------------------------------

  // A page opened with ?code=<key> keeps the key for this tab and drops it from the address bar.
  function takeKeyFromAddress() {
    const params = new URLSearchParams(location.search);
    if (!params.has('code')) return;
    const code = params.get('code');
    if (code) sessionStorage.setItem(KEY_STORAGE, code);
    params.delete('code');
    const query = params.toString();
    history.replaceState(history.state, '', location.pathname + (query ? `?${query}` : '') + location.hash);
  }
  const apiKey = () => sessionStorage.getItem(KEY_STORAGE);

  // -- small helpers -----------------------------------------------------------------------

  // Builds elements with text nodes only (blob names are untrusted: never innerHTML).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') el.className = value;
      else if (name === 'style') el.style.cssText = value;   // CSSOM: the CSP allows it, unlike a style attribute
      else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  // Names are untrusted text: bidi controls (U+202E RIGHT-TO-LEFT OVERRIDE turns "\u202egnp.exe"
  // into what reads as "exe.png"), other invisible formatting and control characters are shown as
  // visible [U+XXXX] marks, and every name sits in its own <bdi> so it cannot reorder the text
  // around it. Attributes (title, alt) get the marked text.
  const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;
  const mark = (ch) => `[U+${ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}]`;
  const shown = (text) => String(text).replace(HIDDEN, mark);
  function nm(text, attrs) {
    const value = String(text);
    const parts = [];
    let last = 0;
    for (const match of value.matchAll(HIDDEN)) {
      if (match.index > last) parts.push(value.slice(last, match.index));
      parts.push(h('span', { class: 'ctl', title: 'an invisible control character, shown' }, mark(match[0])));
      last = match.index + match[0].length;
    }
    if (last < value.length) parts.push(value.slice(last));
    return h('bdi', { dir: 'auto', ...(attrs || {}) }, parts);
  }

  const enc = encodeURIComponent;
  const encPath = (path) => path.split('/').map(enc).join('/');
  const jobHref = (job) => `/ui/jobs/${enc(job)}`;
  const taskHref = (job, task) => `${jobHref(job)}/tasks/${enc(task)}`;
  const num = (n) => Number(n || 0).toLocaleString('en-US');

  function bytes(n) {
    n = Number(n || 0);
    if (n < 1024) return `${n} B`;
    const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = -1;
    do { n /= 1024; i += 1; } while (n >= 1024 && i < units.length - 1);
    return `${n >= 100 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
  }

  function ago(iso) {
    if (!iso) return '—';
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 60) return `${Math.floor(seconds)} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return new Date(iso).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
  }
  const when = (iso) => h('td', { class: 'when', title: iso || '' }, ago(iso));
  const chip = (kind, count) => h('span', { class: `chip k-${kind}` }, nm(kind), count === undefined ? null : h('b', {}, num(count)));

  // -- the API -----------------------------------------------------------------------------

  class Unauthorized extends Error {}
  class NotFound extends Error {}
  class Gone extends Error {}   // a change feed cursor past its retention: read the page again

  async function api(path, params, signal) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, value);
    }
    const response = await fetch(url.pathname + url.search, {
      headers: { 'x-functions-key': apiKey() || '', accept: 'application/json' },
      cache: 'no-store',
      signal,
    });
    if (response.status === 401) throw new Unauthorized('The key was not accepted.');
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (response.status === 404) throw new NotFound((body && body.error && body.error.message) || 'Not found');
    if (response.status === 410) throw new Gone((body && body.error && body.error.message) || 'Gone');
    if (!response.ok) throw new Error((body && body.error && body.error.message) || `HTTP ${response.status}`);
    return body;
  }

  // Items of a listing, following nextLink until `limit` items; `more` tells if some are left.
  async function listing(path, params, limit) {
    const items = [];
    let body = await api(path, { ...params, maxpagesize: Math.min(limit, 1000) });
    for (;;) {
      items.push(...body.value);
      if (!body.nextLink || items.length >= limit) return { items: items.slice(0, limit), more: Boolean(body.nextLink) || items.length > limit };
      const next = new URL(body.nextLink, location.origin);   // relative, or on PUBLIC_BASE_URL: same API
      body = await api(next.pathname + next.search);
    }
  }

  // -- the change feed -----------------------------------------------------------------------
  // A job page reads its listings once, then follows the job's change feed: each request is a
  // long-poll (`wait`), answered as soon as an output is indexed, changed or deleted, and the
  // page applies the changes to what it shows instead of reading the listings again.

  const FEED_WAIT_S = 25;

  // The cursor at the feed's end, taken before the listings are read: whatever changes after
  // that is in the feed (a change already in the listings is applied again, harmlessly).
  const feedStart = async (base, params) => (await api(`${base}/changes`, params)).cursor;

  // The long-poll in flight, aborted when the page changes or asks for more rows.
  let waiting = null;
  const stopWaiting = () => { if (waiting) waiting.abort(); waiting = null; };

  async function feedNext(state, base, params) {
    waiting = new AbortController();
    const body = await api(`${base}/changes`, { ...params, cursor: state.cursor, wait: FEED_WAIT_S, maxpagesize: 1000 }, waiting.signal);
    waiting = null;
    state.cursor = body.cursor;
    return body.value;
  }

  const itemKey = (o) => `${o.taskId || ''}\u0000${o.kind}\u0000${o.path}`;
  const byKey = (a, b) => (itemKey(a) < itemKey(b) ? -1 : itemKey(a) > itemKey(b) ? 1 : 0);
  const listed = (change) => ['created', 'updated', 'admitted'].includes(change.change);

  // A listing's items with `changes` applied: listed ones added or replaced, the others removed.
  function applied(items, changes, keep) {
    const all = new Map(items.map((o) => [itemKey(o), o]));
    for (const change of changes) {
      if (!keep(change.output)) continue;
      if (listed(change)) all.set(itemKey(change.output), change.output);
      else all.delete(itemKey(change.output));
    }
    return [...all.values()].sort(byKey);
  }

  function recentPanel(recent) {
    if (!recent.length) return null;
    return panel('Recent changes', num(recent.length),
      table([['Change'], ['Task'], ['Kind'], ['Path'], ['Size', 'num'], ['Indexed']],
        recent.map((c) => h('tr', { class: `change-${c.change}`, 'data-change': `${c.change} ${c.output.kind}/${c.output.path}` },
          h('td', {}, h('span', { class: `chip ch-${c.change}` }, c.change)),
          h('td', {}, c.output.taskId ? nm(c.output.taskId) : '(job)'), h('td', {}, chip(c.output.kind)),
          h('td', { class: 'path' }, nm(c.output.path)), h('td', { class: 'num' }, bytes(c.output.size)), when(c.at))), ''));
  }

  const RECENT = 20;
  const remember = (state, changes) => { state.recent = [...changes.slice().reverse(), ...(state.recent || [])].slice(0, RECENT); };

  const outputPath = (item, verb = 'outputs') =>
    `/api/jobs/${enc(item.jobId)}${item.taskId ? `/tasks/${enc(item.taskId)}` : ''}/${verb}/${enc(item.kind)}/${encPath(item.path)}`;
  const outputKey = (item) => `${item.taskId || ''}\u0000${item.kind}\u0000${item.path}\u0000${item.etag}`;

  // -- read-only SAS links, fetched lazily (when their element scrolls into view) -----------

  const links = new Map();
  let linkFetches = 0;
  const linkQueue = [];

  function runLinkQueue() {
    while (linkFetches < LINK_FETCHES && linkQueue.length) {
      const job = linkQueue.shift();
      linkFetches += 1;
      job().finally(() => { linkFetches -= 1; runLinkQueue(); });
    }
  }

  function downloadUrl(item) {
    const key = outputKey(item);
    const cached = links.get(key);
    if (cached && (!cached.expiresAt || cached.expiresAt - Date.now() > 60_000)) return cached.promise;
    const entry = { expiresAt: null };
    entry.promise = new Promise((resolve, reject) => {
      linkQueue.push(() => api(outputPath(item)).then((output) => {
        entry.expiresAt = Date.parse(output.downloadUrlExpiresAt);
        resolve(output.downloadUrl);
      }, (error) => { links.delete(key); reject(error); }));
      runLinkQueue();
    });
    links.set(key, entry);
    return entry.promise;
  }

  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      entry.target.loadLink();
    }
  }, { rootMargin: '300px' });

  function downloadLink(item, label = 'Download') {
    const a = h('a', { class: 'dl pending', href: '#', target: '_blank', rel: 'noopener noreferrer',
      title: `Download ${shown(item.path)} (${bytes(item.size)})` }, label);
    a.loadLink = () => downloadUrl(item).then((url) => { a.href = url; a.classList.remove('pending'); }, () => {});
    a.addEventListener('click', async (event) => {
      const cached = links.get(outputKey(item));
      if (!a.classList.contains('pending') && cached && cached.expiresAt - Date.now() > 60_000) return;
      event.preventDefault();
      const url = await downloadUrl(item);
      a.href = url;
      window.open(url, '_blank', 'noopener,noreferrer');
    });
    observer.observe(a);
    return a;
  }

  // Thumbnails keep their element across refreshes, so a poll never reloads an image.
  const thumbs = new Map();
  function previewImage(item, className) {
    const key = `${className}\u0000${outputKey(item)}`;
    if (thumbs.has(key)) return thumbs.get(key);
    const img = h('img', { alt: shown(`${item.kind} ${item.path}${item.taskId ? ` of ${item.taskId}` : ''}`), decoding: 'async' });
    const frame = h('div', { class: `frame ${className} loading` }, img);
    img.addEventListener('load', () => frame.classList.remove('loading'));
    frame.loadLink = () => downloadUrl(item).then((url) => { img.src = url; }, () => frame.classList.remove('loading'));
    observer.observe(frame);
    thumbs.set(key, frame);
    return frame;
  }

  // -- page furniture ----------------------------------------------------------------------

  // Replaces the page's content; null and false stand for "nothing here".
  const show = (...nodes) => main.replaceChildren(...nodes.flat().filter(Boolean));

  function setCrumbs(parts) {
    const nodes = [];
    parts.forEach(([label, href], i) => {
      if (i) nodes.push(h('span', { class: 'sep' }, '/'));
      nodes.push(href ? h('a', { href }, nm(label)) : h('span', { title: shown(label) }, nm(label)));
    });
    crumbsEl.replaceChildren(...nodes);
  }

  function setStatus(ok, text) {
    statusEl.classList.toggle('stale', !ok);
    statusEl.replaceChildren(h('span', { class: 'dot' }), text);
  }

  function panel(title, count, ...body) {
    return h('section', { class: 'panel' }, h('h2', {}, title, count === null ? null : h('span', { class: 'count' }, count)), body);
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h('div', { class: 'empty' }, empty);
    return h('table', {},
      h('thead', {}, h('tr', {}, headers.map(([label, cls]) => h('th', { class: cls || null }, label)))),
      h('tbody', {}, rows));
  }

  function moreButton(state, name, step, shown, more) {
    if (!more) return null;
    return h('div', { class: 'more' }, `Showing ${num(shown)}`,
      h('button', { class: 'btn', type: 'button', onclick: () => { state.limits[name] += step; state.refreshNow(); } }, `Show ${step} more`));
  }

  function meter(label, used, limit, format) {
    const share = limit ? Math.min(1, used / limit) : 0;
    const cls = !limit ? 'none' : share >= 1 ? 'full' : share >= 0.8 ? 'warn' : '';
    return h('div', { class: 'meter' },
      h('div', { class: 'row' }, h('span', {}, label),
        h('span', { class: 'of' }, limit ? `${format(used)} of ${format(limit)} · ${Math.round(share * 100)}%` : `${format(used)} · no limit`)),
      h('div', { class: `bar ${cls}`, role: 'meter', 'aria-valuenow': used, 'aria-valuemax': limit || null, 'aria-label': label },
        h('span', { style: limit ? `width:${(share * 100).toFixed(2)}%` : null })));
  }

  // -- pages -------------------------------------------------------------------------------

  async function jobsPage(state) {
    setCrumbs([['Jobs', null]]);
    const { items, more } = await listing('/api/jobs', {}, state.limits.jobs);
    const rows = items.map((job) => {
      const id = job.jobId;
      return h('tr', {},
        h('td', {}, id ? h('a', { href: jobHref(id) }, nm(id))
          : h('span', { class: 'sub', title: 'A hashed container: register its job ID (PUT /api/jobs/{jobId}, or batch-outputs prepare), or open /ui/jobs/{jobId}' }, 'job ID not registered')),
        h('td', { class: 'path' }, nm(job.container)),
        h('td', { class: 'num' }, num(job.tasks)),
        h('td', { class: 'num' }, num(job.outputs)),
        h('td', { class: 'num' }, bytes(job.bytes)),
        h('td', { class: 'num' }, job.rejections ? h('span', { class: 'chip', style: 'color:var(--bad)' }, num(job.rejections)) : '0'),
        when(job.lastIndexedAt));
    });
    show(
      h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Jobs'), h('div', { class: 'sub' }, 'Azure Batch jobs with indexed outputs'))),
      panel('Indexed jobs', `${num(items.length)}${more ? '+' : ''}`,
        table([['Job'], ['Container'], ['Tasks', 'num'], ['Outputs', 'num'], ['Size', 'num'], ['Rejected', 'num'], ['Last indexed']], rows,
          'No job has indexed outputs yet. Outputs appear here as Batch tasks save them.'),
        moreButton(state, 'jobs', 1000, items.length, more)));
  }

  async function jobPage(state, jobId) {
    setCrumbs([['Jobs', '/ui/'], [jobId, null]]);
    const base = `/api/jobs/${enc(jobId)}`;
    if (state.model && state.limitsSeen === JSON.stringify(state.limits)) {
      const changes = await feedNext(state, base);
      if (!changes.length) { refreshTimes(); return true; }
      const m = state.model;
      m.jobOutputs.items = applied(m.jobOutputs.items, changes, (o) => !o.taskId);
      m.previews.items = applied(m.previews.items, changes, (o) => Boolean(o.taskId) && o.kind === 'TaskPreview');
      m.rejections.items = applied(m.rejections.items, changes.map((c) => ({ ...c, change: c.change === 'rejected' ? 'created' : 'deleted' })), () => true);
      remember(state, changes);
      // Counts and the task table are figures, not listings of outputs: read them again.
      [m.summary, m.tasks] = await Promise.all([api(base), listing(`${base}/tasks`, {}, state.limits.tasks)]);
      renderJob(state, jobId);
      return true;
    }
    const cursor = await feedStart(base);
    let summary;
    try {
      summary = await api(base);
    } catch (error) {
      if (!(error instanceof NotFound)) throw error;
      show(h('div', { class: 'page-head' }, h('h1', {}, nm(jobId))),
        h('div', { class: 'panel empty', id: 'not-indexed' }, 'No output of job ', nm(jobId), ' is indexed yet. This page updates as soon as one is.'));
      state.model = null;
      return false;
    }
    const [jobOutputs, previews, tasks, rejections] = await Promise.all([
      listing(`${base}/outputs`, {}, state.limits.outputs),
      listing(`${base}/task-outputs`, { kind: 'TaskPreview' }, state.limits.previews),
      listing(`${base}/tasks`, {}, state.limits.tasks),
      summary.rejections.outputs ? listing(`${base}/rejections`, {}, 100) : Promise.resolve({ items: [], more: false }),
    ]);
    state.model = { summary, jobOutputs, previews, tasks, rejections };
    state.cursor = cursor;
    state.limitsSeen = JSON.stringify(state.limits);
    renderJob(state, jobId);
    return true;
  }

  function renderJob(state, jobId) {
    const { summary, jobOutputs, previews, tasks, rejections } = state.model;
    const quota = summary.quota;
    const kinds = Object.entries(summary.kinds);
    const biggest = Math.max(1, ...kinds.map(([, k]) => k.bytes));
    const jobPreviews = jobOutputs.items.filter((o) => o.kind === 'JobPreview' && isImage(o));

    show(
      h('div', { class: 'page-head' },
        h('div', {}, h('h1', {}, nm(summary.jobId || jobId)),
          h('div', { class: 'sub' }, h('span', { class: 'mono' }, nm(summary.container)), ' · last indexed ', h('span', { title: summary.lastIndexedAt || '' }, ago(summary.lastIndexedAt))))),
      h('div', { class: 'stats' },
        stat('Outputs', num(summary.usage.outputs)), stat('Size', bytes(summary.usage.bytes)),
        stat('Tasks', num(summary.tasks)), stat('Rejected', num(summary.rejections.outputs), summary.rejections.outputs > 0),
        lagStat(summary.lag)),
      h('div', { class: 'grid-2 section' },
        panel('Quota', null,
          meter('Outputs', summary.usage.outputs, quota.maxOutputs, num),
          meter('Bytes', summary.usage.bytes, quota.maxBytes, bytes),
          h('div', { class: 'sub' }, quota.maxOutputsPerTask ? `At most ${num(quota.maxOutputsPerTask)} outputs per task.` : 'No per-task limit.',
            summary.rejections.outputs ? ` ${num(summary.rejections.outputs)} outputs (${bytes(summary.rejections.bytes)}) rejected.` : '')),
        panel('Outputs by kind', null, table([['Kind'], ['Outputs', 'num'], ['Size', 'num'], ['']],
          kinds.map(([kind, k]) => h('tr', {}, h('td', {}, chip(kind)), h('td', { class: 'num' }, num(k.outputs)), h('td', { class: 'num' }, bytes(k.bytes)),
            h('td', { style: 'width:30%' }, h('span', { class: 'kindbar', style: `width:${Math.max(2, 100 * k.bytes / biggest).toFixed(1)}%` })))),
          'Nothing indexed.'))),
      panel('Job outputs', `${num(jobOutputs.items.length)}${jobOutputs.more ? '+' : ''}`,
        jobPreviews.length ? h('div', { class: 'hero section' }, jobPreviews.map((o) => h('figure', {}, previewImage(o, 'hero-frame'),
          h('figcaption', {}, h('span', { class: 'mono' }, nm(o.path)), bytes(o.size), downloadLink(o))))) : null,
        outputsTable(jobOutputs.items, false, 'The job has no job outputs yet (JobOutput, JobPreview).'),
        moreButton(state, 'outputs', PAGE.outputs, jobOutputs.items.length, jobOutputs.more)),
      panel('Task previews', `${num(summary.kinds.TaskPreview ? summary.kinds.TaskPreview.outputs : 0)}`,
        previews.items.length ? h('div', { class: 'thumbs', id: 'previews' }, previews.items.map((o) =>
          h('a', { class: 'thumb', href: taskHref(jobId, o.taskId), title: shown(`${o.taskId}: ${o.path}`) }, previewImage(o, 'thumb-frame'),
            h('div', { class: 'caption' }, h('span', { class: 'name' }, nm(o.taskId)), h('span', { class: 'size' }, bytes(o.size))))))
          : h('div', { class: 'empty' }, 'No TaskPreview yet.'),
        moreButton(state, 'previews', PAGE.previews, previews.items.length, previews.more)),
      recentPanel(state.recent || []),
      panel('Tasks', num(summary.tasks),
        table([['Task'], ['Outputs by kind'], ['Outputs', 'num'], ['Size', 'num'], ['Last indexed']],
          tasks.items.map((t) => h('tr', { 'data-task': t.taskId },
            h('td', {}, h('a', { href: taskHref(jobId, t.taskId) }, nm(t.taskId))),
            h('td', {}, Object.entries(t.kinds).map(([kind, k]) => chip(kind, k.outputs))),
            h('td', { class: 'num' }, num(t.outputs)), h('td', { class: 'num' }, bytes(t.bytes)), when(t.lastIndexedAt))),
          'No task has saved an output yet.'),
        moreButton(state, 'tasks', PAGE.tasks, tasks.items.length, tasks.more)),
      rejections.items.length ? panel('Rejected by quota', num(summary.rejections.outputs),
        table([['Task'], ['Kind'], ['Path'], ['Size', 'num'], ['Limit crossed'], ['Event']],
          rejections.items.map((o) => h('tr', {}, h('td', {}, o.taskId ? h('a', { href: taskHref(jobId, o.taskId) }, nm(o.taskId)) : '(job)'),
            h('td', {}, chip(o.kind)), h('td', { class: 'path' }, nm(o.path)), h('td', { class: 'num' }, bytes(o.size)),
            h('td', {}, o.reason || ''), when(o.createdAt))), '')) : null);
  }

  const isImage = (o) => /^image\//.test(o.contentType || '') || /\.(png|jpe?g|gif|webp|bmp|svg)$/i.test(o.path);

  // Seconds as people read them: 850 ms, 12.4 s, 3.5 min, 2.1 h.
  function duration(s) {
    if (s === null || s === undefined) return '\u2014';
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  // How far behind the index is: eventTime to indexed, over the last hour (the summary's lag).
  function lagStat(lag) {
    const measured = Boolean(lag && lag.events > 0);
    return h('div', { class: 'stat', id: 'lag', title: measured
      ? `From eventTime to indexed, ${num(lag.events)} events in the last hour: p50 ${duration(lag.p50)}, p95 ${duration(lag.p95)}, max ${duration(lag.max)}`
      : 'No event indexed in the last hour' },
    h('div', { class: 'label' }, 'Lag p95, last hour'),
    h('div', { class: 'value' }, measured ? duration(lag.p95) : '\u2014'),
    measured ? h('div', { class: 'detail' }, `p50 ${duration(lag.p50)} \u00b7 max ${duration(lag.max)} \u00b7 ${num(lag.events)} events`) : null);
  }

  function stat(label, value, bad) {
    return h('div', { class: 'stat' }, h('div', { class: 'label' }, label), h('div', { class: `value${bad ? ' bad' : ''}` }, value));
  }

  function outputsTable(items, withTask, empty) {
    return table([['Kind'], ['Path'], ['Size', 'num'], ['Saved'], ['']],
      items.map((o) => h('tr', { 'data-output': `${o.kind}/${o.path}` }, h('td', {}, chip(o.kind)), h('td', { class: 'path' }, nm(o.path)),
        h('td', { class: 'num' }, bytes(o.size)), when(o.createdAt), h('td', { class: 'num' }, downloadLink(o)))),
      empty);
  }

  // Refresh "n s ago" cells between data changes.
  function refreshTimes() {
    for (const cell of main.querySelectorAll('td.when[title]')) {
      if (cell.title) cell.textContent = ago(cell.title);
    }
  }

  const tails = new Map();   // path -> { etag, size, pre }

  async function taskPage(state, jobId, taskId) {
    setCrumbs([['Jobs', '/ui/'], [jobId, jobHref(jobId)], [taskId, null]]);
    const base = `/api/jobs/${enc(jobId)}`;
    const filter = { taskId };
    const limit = state.limits.outputs * 10;
    if (state.model && state.limitsSeen === JSON.stringify(state.limits)) {
      const changes = await feedNext(state, base, filter);
      if (!changes.length) { refreshTimes(); return true; }
      state.model.items = applied(state.model.items, changes, () => true);
      remember(state, changes);
    } else {
      const cursor = await feedStart(base, filter);
      const { items, more } = await listing(`${base}/tasks/${enc(taskId)}/outputs`, {}, limit);
      state.model = { items, more };
      state.cursor = cursor;
      state.limitsSeen = JSON.stringify(state.limits);
    }
    const { items, more } = state.model;
    const logs = items.filter((o) => o.kind === 'TaskLog');
    const logViews = await Promise.all(logs.map((o) => logView(o)));

    const total = items.reduce((sum, o) => sum + (o.size || 0), 0);
    const previews = items.filter((o) => o.kind === 'TaskPreview' && isImage(o));
    show(
      h('div', { class: 'page-head' }, h('div', {},
        h('h1', {}, nm(taskId)),
        h('div', { class: 'sub' }, 'Task of ', h('a', { href: jobHref(jobId) }, nm(jobId)), ` · ${num(items.length)}${more ? '+' : ''} outputs · ${bytes(total)}`))),
      items.length ? null : h('div', { class: 'panel empty' }, 'Task ', nm(taskId), ' has no indexed outputs yet. This page updates as soon as it has.'),
      previews.length ? panel('Previews', num(previews.length), h('div', { class: 'hero' }, previews.map((o) => h('figure', {}, previewImage(o, 'hero-frame'),
        h('figcaption', {}, h('span', { class: 'mono' }, nm(o.path)), bytes(o.size), downloadLink(o)))))) : null,
      logs.length ? panel('Logs', num(logs.length), logViews) : null,
      items.length ? panel('Outputs', num(items.length), outputsTable(items, false, ''),
        moreButton(state, 'outputs', PAGE.outputs * 10, items.length, more)) : null,
      recentPanel(state.recent || []));
    for (const view of logViews) { const pre = view.querySelector('pre'); pre.scrollTop = pre.scrollHeight; }
  }

  // The last lines of a log, read by the API (a bounded range read): re-read when the blob changes.
  async function logView(item) {
    const key = `${item.path}`;
    let view = tails.get(key);
    if (view && view.etag === item.etag && view.size === item.size) return view.element;
    const tail = await api(outputPath(item, 'tail'), { maxBytes: LOG_TAIL_BYTES });
    const pre = h('pre', { class: 'tail', 'data-log': item.path, tabindex: '0' },
      tail.truncated ? h('span', { class: 'cut' }, `… ${bytes(tail.start)} earlier not shown\n`) : null, tail.text || '(empty)');
    const element = h('div', { class: 'log' },
      h('div', { class: 'log-head' }, h('span', { class: 'name' }, nm(item.path)),
        h('span', { class: 'meta' }, tail.truncated ? `last ${bytes(tail.size - tail.start)} of ${bytes(tail.size)}` : bytes(tail.size),
          h('span', { title: item.createdAt || '' }, ago(item.createdAt)), downloadLink(item, 'Full log'))),
      pre);
    tails.set(key, { etag: item.etag, size: item.size, element });
    return element;
  }

  // -- the key form ------------------------------------------------------------------------

  function askForKey(message) {
    stopPolling();
    setCrumbs([]);
    statusEl.replaceChildren();
    signOut.hidden = true;
    const input = h('input', { id: 'key', name: 'key', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
    const form = h('form', { class: 'keyform panel', id: 'key-form' },
      h('h1', {}, 'Open the output browser'),
      h('p', {}, 'Enter an API key (one of the app\u2019s API_KEYS, or a function key under Azure Functions). It is kept for this browser tab only.'),
      message ? h('div', { class: 'error', role: 'alert' }, message) : null,
      h('label', { for: 'key' }, 'API key'), input,
      h('button', { class: 'btn primary', type: 'submit' }, 'Open'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_STORAGE, input.value.trim());
      start();
    });
    show(form);
    input.focus();
  }

  // -- polling -----------------------------------------------------------------------------

  let timer = null;
  let generation = 0;
  const stopPolling = () => { generation += 1; clearTimeout(timer); stopWaiting(); };

  function route() {
    const path = location.pathname;
    const job = path.match(/^\/ui\/jobs\/([^/]+)\/?$/);
    const task = path.match(/^\/ui\/jobs\/([^/]+)\/tasks\/([^/]+)\/?$/);
    if (task) return (state) => taskPage(state, decodeURIComponent(task[1]), decodeURIComponent(task[2]));
    if (job) return (state) => jobPage(state, decodeURIComponent(job[1]));
    return (state) => jobsPage(state);
  }

  function start() {
    if (!apiKey()) { askForKey(); return; }
    stopPolling();
    signOut.hidden = false;
    const mine = generation;
    const render = route();
    const state = { limits: { jobs: 1000, tasks: PAGE.tasks, previews: PAGE.previews, outputs: PAGE.outputs }, model: null };
    let busy = false;
    const tick = async () => {
      clearTimeout(timer);
      if (mine !== generation || busy) return;
      busy = true;
      // A page that follows the change feed asks again at once (each request waits for a
      // change); the jobs list, a page not indexed yet and a failing API are polled.
      let again = POLL_MS;
      try {
        if (!document.hidden && await render(state)) again = 0;
        if (!document.hidden) setStatus(true, `Live · updated ${new Date().toLocaleTimeString()}`);
      } catch (error) {
        if (mine !== generation) return;
        if (error instanceof Unauthorized) { sessionStorage.removeItem(KEY_STORAGE); askForKey(error.message); return; }
        if (error.name === 'AbortError') {
          again = 0;   // the page asked for more rows: read it again
        } else if (error instanceof Gone) {
          state.model = null;   // the feed no longer has our place: read the page again
          again = 0;
        } else {
          setStatus(false, `Retrying: ${error.message}`);
          if (!main.firstChild) show(h('div', { class: 'error' }, error.message));
        }
      } finally {
        busy = false;
      }
      if (mine === generation) timer = setTimeout(tick, again);
    };
    state.refreshNow = () => { state.limitsSeen = null; stopWaiting(); clearTimeout(timer); timer = setTimeout(tick, 0); };
    tick();
  }

  signOut.addEventListener('click', () => { sessionStorage.removeItem(KEY_STORAGE); askForKey(); });
  takeKeyFromAddress();
  start();
})();
