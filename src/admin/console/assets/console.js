// The console's page: a live table of API keys (server-sent events), create, delete and
// regenerate, one key or many. No framework; the server checks every request (session bearer,
// Origin) and acts with the caller's kubeconfig. No client secret ever reaches this page.
//
// The session: the printed URL carries a one-time token in its fragment (#token=...), which never
// reaches a server. The page clears it from the address bar, trades it once for a session secret
// (POST /api/session), keeps that in sessionStorage (this origin, port included, this tab only)
// and sends it as "Authorization: Bearer ..." on every /api call. No cookies: a browser would
// send them to every port of 127.0.0.1.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const SESSION = 'apikey-console-session';
  const ENDED = 'This console session has ended: start `kubectl apikey console` again.';
  const NOT_ANSWERING = 'The console is not answering: it may have been stopped (start `kubectl apikey console` again).';
  const NOT_ANSWERING_AFTER = 10000; // ms of failed reconnects before NOT_ANSWERING is shown
  const entries = new Map(); // "namespace/name" -> {tr, cells, data}
  const selected = new Set();
  let secret = null; // the session secret
  let stream = null; // AbortController of the open event stream
  let context = { namespace: null, allNamespaces: false };
  let pending = null; // the action the confirmation dialog is about
  let opener = null; // what had focus before a dialog opened

  const keyOf = (row) => `${row.namespace}/${row.name}`;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  // kubectl's ages: 45s, 12m, 5h, 3d; in the future: "in 5h".
  function age(iso) {
    if (!iso) return '';
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return '';
    let s = Math.round((Date.now() - then) / 1000);
    const future = s < 0;
    s = Math.abs(s);
    const short = s < 120 ? `${s}s` : s < 7200 ? `${Math.floor(s / 60)}m`
      : s < 172800 ? `${Math.floor(s / 3600)}h` : `${Math.floor(s / 86400)}d`;
    return future ? `in ${short}` : short;
  }

  // HH:MM:SS, local time; '' when iso is not a time.
  function clock(iso) {
    const then = iso ? new Date(iso) : null;
    if (!then || Number.isNaN(then.getTime())) return '';
    const two = (n) => String(n).padStart(2, '0');
    return `${two(then.getHours())}:${two(then.getMinutes())}:${two(then.getSeconds())}`;
  }

  // The State column: "rotated (generation N) at HH:MM:SS", "pending…",
  // "failed: Reason — message", "deleting…".
  function stateText(action) {
    if (!action) return '';
    switch (action.state) {
      case 'rotated': {
        const text = action.generation != null ? `rotated (generation ${action.generation})` : 'rotated';
        const at = clock(action.rotatedAt);
        return at ? `${text} at ${at}` : text;
      }
      case 'pending': return 'pending…';
      case 'failed': return `failed: ${action.reason || ''}${action.message ? ` — ${action.message}` : ''}`;
      case 'deleting': return 'deleting…';
      default: return action.state;
    }
  }

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  // The session is over (401, or no token and no stored session): say so, and stop.
  function ended(message) {
    if (stream) stream.abort();
    stream = null;
    secret = null;
    sessionStorage.removeItem(SESSION);
    for (const dialog of document.querySelectorAll('dialog')) if (dialog.open) dialog.close();
    document.querySelector('main').hidden = true;
    $('ended').textContent = message || ENDED;
    $('ended').hidden = false;
  }

  // The JSON of a response, or {error} with its text.
  async function json(response) {
    const text = await response.text();
    try { return JSON.parse(text); } catch { return { error: text.trim() || response.statusText }; }
  }

  async function call(path, body) {
    const response = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${secret}` },
      body: JSON.stringify(body),
    });
    if (response.status === 401) { ended(); return { ok: false, data: { error: ENDED } }; }
    return { ok: response.ok, data: await json(response) };
  }

  // Takes the token out of the fragment (and the history), trades it for the session secret, or
  // resumes the tab's session (a reload). Whether there is a session.
  async function begin() {
    const token = new URLSearchParams(location.hash.slice(1)).get('token');
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
    if (token) {
      const response = await fetch('/api/session', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token }),
      });
      const data = await json(response);
      if (response.ok && data.session) sessionStorage.setItem(SESSION, data.session);
      else if (!sessionStorage.getItem(SESSION)) { ended(data.error); return false; }
    }
    secret = sessionStorage.getItem(SESSION);
    if (!secret) { ended(); return false; }
    return true;
  }

  // Reads a text/event-stream body (WHATWG HTML, "Server-sent events"): events end at a blank
  // line; "event:" names one, "data:" lines are its data; lines starting with ":" are comments.
  async function readEvents(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      // CRLF and CR end lines too; a CR at the very end may be the first half of a CRLF.
      buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n|\r(?!$)/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? '' : line.slice(colon + 1);
          if (text.startsWith(' ')) text = text.slice(1);
          if (field === 'event') name = text;
          else if (field === 'data') data.push(text);
        }
        if (data.length) onEvent(name, data.join('\n'));
      }
    }
  }

  function showError(message) { $('action-error').textContent = message || ''; }
  function setStatus(message) { if ($('status').textContent !== message) $('status').textContent = message; }

  // Menus are popovers (top layer: never clipped by the scrolling table), placed under their
  // button; Esc and a click elsewhere close them, and focus returns to the button.
  function menu(button, items) {
    items.setAttribute('popover', 'auto');
    button.popoverTargetElement = items;
    items.addEventListener('toggle', (event) => {
      button.setAttribute('aria-expanded', String(event.newState === 'open'));
      if (event.newState !== 'open') return;
      const r = button.getBoundingClientRect();
      const width = items.offsetWidth;
      items.style.top = `${Math.min(r.bottom + 4, window.innerHeight - items.offsetHeight - 4)}px`;
      items.style.left = `${Math.max(4, Math.min(r.right - width, window.innerWidth - width - 4))}px`;
      const first = items.querySelector('button');
      if (first) first.focus();
    });
    items.addEventListener('keydown', (event) => {
      if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
      const all = [...items.querySelectorAll('button')];
      const at = all.indexOf(document.activeElement);
      all[(at + (event.key === 'ArrowDown' ? 1 : all.length - 1)) % all.length].focus();
      event.preventDefault();
    });
  }

  function makeEntry(key) {
    const box = el('input', { type: 'checkbox', 'data-testid': `select-${key}`, 'aria-label': `Select ${key}` });
    box.addEventListener('change', () => {
      if (box.checked) selected.add(key); else selected.delete(key);
      updateSelection();
    });
    const cell = (label, testid) => el('td', testid ? { 'data-label': label, 'data-testid': `${testid}-${key}` } : { 'data-label': label });
    const cells = {
      name: cell('Name'), namespace: cell('Namespace'), user: cell('User'),
      clientId: cell('Client Id'), labels: cell('Labels', 'labels'), ready: cell('Ready', 'ready'),
      lastRotated: cell('Last rotated'), nextRotation: cell('Next rotation'),
      age: cell('Age'), state: cell('State', 'state'),
    };
    cells.clientId.className = 'mono';
    // Names and ages on one line: Ready, Labels and State wrap instead.
    for (const c of ['name', 'namespace', 'user', 'lastRotated', 'nextRotation', 'age']) cells[c].className = 'nowrap';
    cells.state.setAttribute('aria-live', 'polite');
    const actionsButton = el('button', {
      type: 'button', class: 'icon', 'aria-expanded': 'false',
      'aria-label': `Actions for ${key}`, 'data-testid': `actions-${key}`,
    }, '⋯');
    const regenerate = el('button', { type: 'button', 'data-testid': `regenerate-${key}` }, 'Regenerate Client Secret');
    const remove = el('button', { type: 'button', 'data-testid': `delete-${key}` }, 'Delete');
    const items = el('div', { class: 'menu-items' }, regenerate, remove);
    menu(actionsButton, items);
    const act = (kind) => () => {
      items.hidePopover();
      const entry = entries.get(key);
      if (entry) confirmAction(kind, [entry.data], actionsButton);
    };
    regenerate.addEventListener('click', act('regenerate'));
    remove.addEventListener('click', act('delete'));
    const tr = el('tr', { 'data-testid': `row-${key}`, 'data-key': key },
      el('td', { class: 'check' }, box),
      ...Object.values(cells),
      el('td', { class: 'actions' }, actionsButton, items));
    return { tr, box, cells, actions: actionsButton, data: null };
  }

  function fill(entry) {
    const row = entry.data;
    const c = entry.cells;
    const set = (cell, text, title) => {
      if (cell.textContent !== text) cell.textContent = text;
      if (title) cell.title = title; else cell.removeAttribute('title');
    };
    set(c.name, row.name);
    set(c.namespace, row.namespace);
    set(c.user, row.user);
    set(c.clientId, row.clientId || '');
    const labels = Object.entries(row.labels || {}).map(([k, v]) => `${k}=${v}`);
    if (c.labels.dataset.labels !== labels.join('\n')) {
      c.labels.dataset.labels = labels.join('\n');
      c.labels.replaceChildren(...(labels.length
        ? [el('span', { class: 'chips' }, ...labels.map((l) => el('span', { class: 'chip' }, l)))]
        : []));
    }
    set(c.ready, row.reason ? `${row.ready} (${row.reason})` : row.ready, row.message);
    set(c.lastRotated, age(row.lastRotatedAt), row.lastRotatedAt);
    set(c.nextRotation, age(row.nextRotationAt), row.nextRotationAt);
    set(c.age, age(row.createdAt), row.createdAt);
    set(c.state, stateText(row.action), row.action && row.action.rotatedAt);
    c.state.className = row.action ? `state ${row.action.state}` : 'state';
    entry.box.checked = selected.has(keyOf(row));
  }

  // What the table shows: "Namespace NS", or "All namespaces" (an empty namespace with -A).
  const scopeLabel = (namespace) => (namespace ? `Namespace ${namespace}` : 'All namespaces');

  // Where focus goes when the row `tr` leaves the table: the actions button of the next row
  // still there (in the order `before`), else of the previous one, else Create.
  function successor(before, tr) {
    const at = before.indexOf(tr);
    const next = before.slice(at + 1).find((t) => t.isConnected)
      || before.slice(0, Math.max(at, 0)).reverse().find((t) => t.isConnected);
    const entry = next && entries.get(next.dataset.key);
    return entry ? entry.actions : $('create-button');
  }

  // Shows `snapshot` (the keys of `label`'s scope). A watch error with nothing listed shows the
  // error alone: no "0 keys", no "No API keys.".
  function render(snapshot, label) {
    if ($('context').textContent !== label) $('context').textContent = label;
    $('watch-error').textContent = snapshot.error || '';
    const n = snapshot.keys.length;
    const failed = Boolean(snapshot.error) && n === 0;
    const count = `${n} ${n === 1 ? 'key' : 'keys'}`;
    setStatus(failed ? '' : snapshot.secretsError
      ? `${count}. The Secrets cannot be watched (${snapshot.secretsError}); regeneration states come from the keys alone.`
      : count);
    const body = $('rows');
    const before = [...body.children];
    const seen = new Set();
    snapshot.keys.forEach((row, index) => {
      const key = keyOf(row);
      seen.add(key);
      let entry = entries.get(key);
      if (!entry) { entry = makeEntry(key); entries.set(key, entry); }
      entry.data = row;
      fill(entry);
      if (body.children[index] !== entry.tr) body.insertBefore(entry.tr, body.children[index] || null);
    });
    const gone = [];
    for (const [key, entry] of entries) {
      if (seen.has(key)) continue;
      const focused = entry.tr.contains(document.activeElement);
      const opened = Boolean(opener && entry.tr.contains(opener));
      entry.tr.remove(); entries.delete(key); selected.delete(key);
      if (focused || opened) gone.push({ tr: entry.tr, focused, opened });
    }
    for (const { tr, focused, opened } of gone) {
      const target = successor(before, tr);
      if (opened) opener = target;
      if (focused) target.focus();
    }
    $('empty').hidden = n > 0 || failed;
    updateSelection();
  }

  function updateSelection() {
    const all = $('select-all');
    const count = selected.size;
    all.checked = count > 0 && count === entries.size;
    all.indeterminate = count > 0 && count < entries.size;
    for (const [key, entry] of entries) entry.box.checked = selected.has(key);
    $('bulk').hidden = count === 0;
    $('bulk-button').textContent = `${count} selected`;
    if (count === 0 && $('bulk-menu').matches(':popover-open')) $('bulk-menu').hidePopover();
  }

  // The live table: GET /api/events with the bearer (EventSource cannot send one), read as it
  // comes; on its end or an error, again after 0.5 s, doubling to 8 s. A new filter aborts it.
  // An empty namespace is the console's own (-n): the field shows it. Once the console has not
  // answered for NOT_ANSWERING_AFTER, the page says so, and goes on trying.
  async function connect() {
    if (stream) stream.abort();
    const controller = new AbortController();
    stream = controller;
    const field = $('filter-namespace');
    const namespace = field.value.trim() || (context.allNamespaces ? '' : context.namespace || '');
    field.value = namespace;
    const label = scopeLabel(namespace);
    const query = new URLSearchParams({ namespace, selector: $('filter-selector').value.trim() });
    setStatus('Loading…');
    let delay = 500;
    let unreachable = null; // since when the console has not answered
    while (!controller.signal.aborted) {
      let note = 'Connection lost; reconnecting…';
      try {
        const response = await fetch(`/api/events?${query}`, {
          headers: { Authorization: `Bearer ${secret}` },
          signal: controller.signal,
          cache: 'no-store',
        });
        unreachable = null;
        if (response.status === 401) { ended(); return; }
        if (response.ok) {
          await readEvents(response.body, (name, data) => {
            if (name !== 'keys') return;
            delay = 500;
            render(JSON.parse(data), label);
          });
        } else {
          const { error } = await json(response);
          if (controller.signal.aborted) return;
          render({ keys: [], error, secretsError: null }, label);
          if (response.status === 422) return; // the filter must change first
          note = 'Retrying…';
        }
      } catch { // a network error, or the stream broke off: try again
        if (unreachable === null) unreachable = Date.now();
      }
      if (controller.signal.aborted) return;
      let wait = delay;
      if (unreachable !== null) {
        const lost = Date.now() - unreachable;
        if (lost >= NOT_ANSWERING_AFTER) {
          if ($('watch-error').textContent !== NOT_ANSWERING) $('watch-error').textContent = NOT_ANSWERING;
          note = '';
        } else {
          wait = Math.min(delay, NOT_ANSWERING_AFTER - lost);
        }
      }
      setStatus(note);
      await sleep(wait);
      delay = Math.min(delay * 2, 8000);
    }
  }

  function openDialog(dialog, from) {
    opener = from || document.activeElement;
    dialog.showModal();
  }

  function closed() {
    const target = opener && opener.isConnected && !opener.closest('[hidden]') ? opener : $('select-all');
    opener = null;
    target.focus();
  }

  // Beside a key in a confirmation, as the plugin's preview: why it is not Ready, or that no
  // operator has written its status yet; '' for a Ready key.
  function readiness(row) {
    if (row.ready === 'False') return `not Ready: ${row.reason || 'no reason given'}`;
    if (row.ready === 'Unknown') return 'no status yet: is an operator watching this namespace?';
    return '';
  }

  function confirmAction(kind, rows, from, many) {
    const remove = kind === 'delete';
    const n = rows.length;
    const these = n === 1 ? 'this API key' : `these ${n} API keys`;
    pending = { kind, many, keys: rows.map((r) => ({ namespace: r.namespace, name: r.name, uid: r.uid })) };
    $('confirm-title').textContent = remove ? (n === 1 ? 'Delete API Key' : 'Delete API Keys') : 'Regenerate Client Secret';
    $('confirm-text').textContent = remove
      ? `Delete ${these}? Requests made with ${n === 1 ? 'it' : 'them'} stop working, and ${n === 1 ? 'its Secret is' : 'their Secrets are'} removed.`
      : `Generate a new Client Secret for ${these}? Workloads must then use the new one from ${n === 1 ? "the key's Secret" : "each key's Secret"}.`;
    $('confirm-keys').replaceChildren(...rows.map((r) => {
      const item = el('li', {}, `${r.namespace}/${r.name} (${r.user})`);
      const flag = readiness(r);
      if (flag) item.append(' ', el('span', r.message ? { class: 'flag', title: r.message } : { class: 'flag' }, `— ${flag}`));
      return item;
    }));
    const notReady = rows.filter((r) => r.ready === 'False').length;
    $('confirm-note').textContent = remove || !notReady ? ''
      : n === 1 ? 'This key is not Ready: it will not rotate until that is fixed.'
        : `${notReady} of these keys ${notReady === 1 ? 'is' : 'are'} not Ready: ${notReady === 1 ? 'it' : 'they'} will not rotate until that is fixed.`;
    $('confirm-note').hidden = !$('confirm-note').textContent;
    $('confirm-button').textContent = remove ? 'Delete' : 'Confirm';
    $('confirm-button').className = remove ? 'danger' : 'primary';
    $('confirm-button').disabled = false;
    openDialog($('confirm-dialog'), from);
  }

  // Runs the confirmed action. Focus then goes back to the row's actions button (and on to a
  // neighbour's when the row leaves, see render), or after a bulk action to the bulk button while
  // keys stay selected, else to "Select all".
  async function confirmed() {
    if (!pending) return;
    const { kind, keys, many } = pending;
    pending = null;
    $('confirm-button').disabled = true;
    showError('');
    try {
      const { ok, data } = await call(kind === 'delete' ? '/api/delete' : '/api/regenerate', { keys });
      if (ok) for (const r of data.results) if (r.ok) selected.delete(`${r.namespace}/${r.name}`);
      updateSelection();
      if (many) opener = $('bulk').hidden ? $('select-all') : $('bulk-button');
      $('confirm-dialog').close();
      if (!ok) { showError(data.error); return; }
      const failed = data.results.filter((r) => !r.ok);
      showError(failed.map((r) => `${r.namespace}/${r.name}: ${r.error}`).join('\n'));
    } catch (e) {
      $('confirm-dialog').close();
      showError(`The console did not answer: ${e.message}`);
    }
  }

  function startCreate() {
    $('create-form').reset();
    $('create-error').textContent = '';
    $('create-namespace').value = $('filter-namespace').value.trim() || context.namespace || '';
    openDialog($('create-dialog'), $('create-button'));
    $('create-name').focus();
  }

  async function create(event) {
    event.preventDefault();
    const form = new FormData($('create-form'));
    const body = Object.fromEntries([...form.entries()].map(([k, v]) => [k, String(v).trim()]));
    const submit = $('create-form').querySelector('[type=submit]');
    submit.disabled = true;
    try {
      const { ok, data } = await call('/api/keys', body);
      if (!ok) { $('create-error').textContent = data.error; return; }
      $('create-dialog').close();
      showError('');
      setStatus(`Created ${data.namespace}/${data.name}.`);
    } catch (e) {
      $('create-error').textContent = `The console did not answer: ${e.message}`;
    } finally {
      submit.disabled = false;
    }
  }

  function bulk(kind) {
    $('bulk-menu').hidePopover();
    const rows = [...entries.values()].filter((e) => selected.has(keyOf(e.data))).map((e) => e.data);
    if (rows.length) confirmAction(kind, rows, $('bulk-button'), true);
  }

  async function start() {
    menu($('bulk-button'), $('bulk-menu'));
    $('bulk-delete').addEventListener('click', () => bulk('delete'));
    $('bulk-regenerate').addEventListener('click', () => bulk('regenerate'));
    $('select-all').addEventListener('change', (event) => {
      selected.clear();
      if (event.target.checked) for (const key of entries.keys()) selected.add(key);
      updateSelection();
    });
    $('filters').addEventListener('submit', (event) => { event.preventDefault(); selected.clear(); connect(); });
    $('create-button').addEventListener('click', startCreate);
    $('create-form').addEventListener('submit', create);
    $('confirm-button').addEventListener('click', confirmed);
    for (const dialog of document.querySelectorAll('dialog')) {
      dialog.addEventListener('close', closed);
      dialog.querySelector('.cancel').addEventListener('click', () => dialog.close());
    }
    setInterval(() => { for (const entry of entries.values()) fill(entry); }, 15000);
    try {
      if (!await begin()) return;
    } catch (e) {
      ended(`The console did not answer: ${e.message}`);
      return;
    }
    try {
      const response = await fetch('/api/context', { headers: { Authorization: `Bearer ${secret}` } });
      if (response.status === 401) { ended(); return; }
      if (response.ok) context = await response.json();
    } catch { /* the event stream reports a console that does not answer */ }
    $('context').textContent = scopeLabel(context.namespace);
    $('filter-namespace').value = context.namespace || '';
    $('filter-namespace').placeholder = context.allNamespaces ? 'all namespaces' : 'start with -A for every namespace';
    connect();
  }

  start();
})();
