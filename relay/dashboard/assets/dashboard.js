// relay dashboard: reads the documented /v1 routes (with the session cookie, or the Bearer
// key the page was opened with) and keeps the page live: stats and history every second,
// devices every 5 s, events as they happen (Server-Sent Events). No framework; every value
// goes into the page as text, never as HTML.
"use strict";

(() => {
  const POLL_MS = 1000;
  const DEVICES_MS = 5000;
  const EVENTS_KEPT = 200;
  const BEHIND_S = 60;
  const DEAD_SHOWN = 100;
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const CSRF = meta("csrf-token");
  const CAN_ACT = meta("relay-can-act") === "1";
  const $ = (sel) => document.querySelector(sel);

  const view = { stats: null, devices: [], history: null, dead: [], painted: false };

  // --- formatting ------------------------------------------------------------------------

  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  const ms = (v) => (v === null || v === undefined ? "–" : v < 1000 ? `${v} ms` : `${(v / 1000).toFixed(2)} s`);
  const clock = (epochS) => new Date(epochS * 1000).toLocaleTimeString("en-GB");
  function when(iso) {
    if (!iso) return "–";
    const at = new Date(iso);
    const today = at.toDateString() === new Date().toDateString();
    return today ? at.toLocaleTimeString("en-GB") : at.toLocaleString("en-GB");
  }

  function ago(iso, nowS) {
    if (!iso) return "never";
    return `${duration(nowS - Date.parse(iso) / 1000)} ago`;
  }

  // --- DOM helpers -----------------------------------------------------------------------

  function cell(tag, text, attrs) {
    const node = document.createElement(tag);
    node.textContent = text;
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function row(cells, attrs) {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
    for (const c of cells) tr.append(c);
    return tr;
  }

  function fill(tbody, rows, emptyText, columns) {
    if (!rows.length) rows = [row([cell("td", emptyText, { colspan: String(columns) })])];
    tbody.replaceChildren(...rows);
  }

  function badge(text, kind) {
    return cell("span", text, { class: `badge ${kind}` });
  }

  function setStatus(text, failed) {
    const status = $("#status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(failed));
  }

  // --- reading /v1 -----------------------------------------------------------------------

  async function api(path, options) {
    const init = Object.assign({ headers: {}, cache: "no-store", credentials: "same-origin" },
      options || {});
    init.headers.Accept = "application/json";
    if (init.method && init.method !== "GET" && CSRF) init.headers["X-CSRF-Token"] = CSRF;
    const answer = await fetch(path, init);
    const body = await answer.json().catch(() => null);
    if (answer.status === 401 && CSRF) {
      location.assign("/dashboard/login");
    }
    if (!answer.ok) {
      const message = body && body.error ? body.error.message : `HTTP ${answer.status}`;
      throw new Error(message);
    }
    return body;
  }

  // --- totals and states -----------------------------------------------------------------

  function renderTotals(stats, deadCount) {
    for (const name of ["queued", "scheduled", "inflight", "awaiting"]) {
      $(`[data-total="${name}"]`).textContent = num(stats.totals[name]);
    }
    $('[data-total="dead"]').textContent = deadCount >= DEAD_SHOWN ? `${num(DEAD_SHOWN)}+` : num(deadCount);
    const states = Object.entries(stats.states);
    $("#states thead tr").replaceChildren(...states.map(([state]) => cell("th", state, { scope: "col" })));
    $("#states tbody tr").replaceChildren(...states.map(([state, count]) =>
      cell("td", num(count), { class: "num", "data-state": state })));
  }

  // --- phones and SIMs -------------------------------------------------------------------

  function paceOf(device, sim) {
    const p = device && device.sims ? device.sims[String(sim)] : null;
    if (!p) return { text: "–", interval: null };
    if (p.unlimited) return { text: "unlimited", interval: 0 };
    const text = `every ${p.interval_s} s, burst ${p.burst}${p.overridden ? " (set)" : ""}`;
    return { text, interval: p.interval_s };
  }

  function laneStatus(lane, online) {
    const out = [];
    if (online === false) out.push(badge("offline", "offline"));
    else if (online === true) out.push(badge("online", "online"));
    else out.push(badge("unknown", "unknown"));
    if (lane.oldest_queued_s !== null && lane.oldest_queued_s > BEHIND_S) {
      out.push(badge("behind", "behind"));
    }
    if (lane.urgent > 0) out.push(badge("urgent waiting", "urgent"));
    return out;
  }

  function laneRow(lane, device, nowS) {
    const online = device && device.online !== null && device.online !== undefined
      ? device.online : lane.online;
    const status = cell("td", "");
    status.append(...laneStatus(lane, online));
    status.append(cell("span", device ? `seen ${ago(device.lastseen, nowS)}` : "", { class: "seen" }));
    const pace = paceOf(device, lane.sim);
    const queued = lane.urgent + lane.bulk;
    const clears = queued === 0 ? "–" : pace.interval === null ? "–"
      : duration(queued * pace.interval);
    let next = lane.next_send_at === null ? "–"
      : lane.next_send_at <= nowS + 0.5 ? "now" : `in ${duration(lane.next_send_at - nowS)}`;
    if (online === false && queued > 0) next = "when the phone is back";
    const quota = lane.quota_limit ? `${num(lane.quota_used)} / ${num(lane.quota_limit)}` : "–";
    const title = device && device.title ? `${device.title} (${lane.device_id})` : String(lane.device_id);
    const n = (field) => cell("td", num(lane[field]), { class: "num", "data-field": field });
    return row([
      cell("th", title, { scope: "row" }),
      cell("td", String(lane.sim)),
      status,
      n("urgent"), n("bulk"), n("scheduled"), n("inflight"), n("verifying"), n("awaiting"),
      cell("td", duration(lane.oldest_queued_s), { "data-field": "oldest_queued_s" }),
      cell("td", next),
      cell("td", pace.text),
      cell("td", clears),
      cell("td", quota, lane.quota_limit ? {} : { title: "no SIM quota configured" }),
    ], { "data-lane": `${lane.device_id}:${lane.sim}`, class: online === false ? "is-offline" : "" });
  }

  // Rows grouped into one <tbody> per pool (its heading: what waits in the pool's own lanes,
  // and "held" when no member may take it); one otherwise.
  function renderLanes(stats, devices) {
    const byId = new Map(devices.map((d) => [d.id, d]));
    const table = $("#lanes");
    const groups = new Map();
    for (const lane of stats.lanes) {
      const pool = lane.pool || "";
      if (!groups.has(pool)) groups.set(pool, []);
      groups.get(pool).push(laneRow(lane, byId.get(lane.device_id), stats.at));
    }
    const bodies = [];
    for (const [pool, rows] of groups) {
      const body = document.createElement("tbody");
      if (pool) {
        const info = (stats.pools || []).find((p) => p.name === pool);
        const waiting = info ? ` · ${num(info.urgent + info.bulk)} waiting in the pool` : "";
        const head = cell("th", `Pool ${pool}${waiting}`, { colspan: "14", scope: "rowgroup" });
        if (info && info.held) head.append(" ", badge(info.status, "offline"));
        body.append(row([head]));
      }
      body.append(...rows);
      bodies.push(body);
    }
    if (!bodies.length) {
      const body = document.createElement("tbody");
      fill(body, [], "No lanes yet: relay has not been asked to send anything", 14);
      bodies.push(body);
    }
    table.querySelectorAll("tbody").forEach((b) => b.remove());
    table.append(...bodies);
  }

  // --- throughput and latency ------------------------------------------------------------

  // submitted last (dashed), so a delivered line of the same height does not hide it
  const SERIES = [
    { name: "delivered", value: (r) => r.delivered },
    { name: "failed", value: (r) => r.failed + r.rejected },
    { name: "submitted", value: (r) => r.submitted },
  ];

  function renderHistory(history) {
    const rows = history.throughput;
    window.RelayChart.draw($("#chart"), rows, SERIES);
    const sum = (field) => rows.reduce((total, r) => total + r[field], 0);
    for (const field of ["submitted", "sent", "delivered", "failed", "rejected"]) {
      $(`[data-hour="${field}"]`).textContent = num(sum(field));
    }
    const last = rows.length > 1 ? rows[rows.length - 2] : rows[rows.length - 1];
    $('[data-hour="rate"]').textContent = last
      ? `${num(last.submitted)} submitted, ${num(last.delivered)} delivered` : "–";
    const latency = history.latency.map((w) => row([
      cell("th", `last ${w.minutes} min`, { scope: "row" }),
      cell("td", ms(w.p50_ms), { class: "num", "data-latency": `p50-${w.minutes}` }),
      cell("td", ms(w.p99_ms), { class: "num", "data-latency": `p99-${w.minutes}` }),
      cell("td", num(w.count), { class: "num" }),
    ]));
    fill($("#latency-table tbody"), latency, "No urgent messages yet", 4);
  }

  // --- dead letters ----------------------------------------------------------------------

  function actionButton(label, verb, record) {
    const button = cell("button", label, { type: "button", class: verb === "purge" ? "danger" : "" });
    button.dataset.action = verb;
    button.dataset.id = record.id;
    button.addEventListener("click", () => confirmAction(verb, record));
    return button;
  }

  function renderDead(list) {
    const rows = list.map((d) => {
      const actions = cell("td", CAN_ACT ? "" : "read-only key");
      if (CAN_ACT) actions.append(actionButton("Retry", "retry", d), actionButton("Purge", "purge", d));
      return row([
        cell("th", d.id, { scope: "row" }),
        cell("td", d.gone ? "(record expired)" : d.sendto),
        cell("td", d.gone ? "–" : `${d.device_id} / ${d.sim}`),
        cell("td", when(d.rejected_at)),
        cell("td", d.error || "–", { class: "words" }),
        cell("td", num(d.attempts), { class: "num" }),
        actions,
      ], { "data-dead": d.id });
    });
    fill($("#dead-table tbody"), rows, "No dead letters", 7);
  }

  function confirmAction(verb, record) {
    const dialog = $("#confirm");
    const to = record.sendto ? ` to ${record.sendto}` : "";
    $("#confirm-text").textContent = verb === "retry"
      ? `Send message ${record.id}${to} again? It goes back to the head of its lane.`
      : `Delete message ${record.id}${to} for good? This cannot be undone.`;
    $("#confirm-ok").textContent = verb === "retry" ? "Retry" : "Purge";
    dialog.dataset.action = verb;
    dialog.onclose = () => {
      if (dialog.returnValue === "ok") act(verb, record.id);
    };
    dialog.returnValue = "";
    dialog.showModal();
    $("#confirm-cancel").focus();
  }

  async function act(verb, id) {
    const note = $("#action-status");
    const path = verb === "retry" ? `/v1/dead/${id}/retry` : `/v1/dead/${id}`;
    try {
      const done = await api(path, { method: verb === "retry" ? "POST" : "DELETE" });
      note.textContent = `Message ${done.id}: ${done.state}.`;
      note.classList.remove("error");
    } catch (err) {
      note.textContent = `Message ${id}: ${err.message}`;
      note.classList.add("error");
    }
    refresh();
  }

  // --- lookup ----------------------------------------------------------------------------

  function definition(list, term, value) {
    list.append(cell("dt", term), cell("dd", value === null || value === undefined ? "–" : String(value)));
  }

  function renderFound(m) {
    const article = document.createElement("article");
    article.className = "found";
    article.dataset.message = m.id;
    article.append(cell("h3", `${m.id} · ${m.state}`));
    const dl = document.createElement("dl");
    definition(dl, "Found by", m.via);
    definition(dl, "Drop-in id", m.dropin_id);
    definition(dl, "To", m.sendto);
    definition(dl, "Phone / SIM", `${m.device_id} / ${m.sim}`);
    definition(dl, "Urgent", m.urgent ? "yes" : "no");
    definition(dl, "Body", m.body);
    definition(dl, "Gateway id", m.sms_id);
    definition(dl, "Gateway status", m.status === null ? null : `${m.status} ${m.statustitle || ""}`);
    definition(dl, "Error", m.error);
    definition(dl, "Attempts", m.attempts);
    article.append(dl);
    article.append(cell("h4", "History of states"));
    const steps = document.createElement("ol");
    steps.className = "history";
    for (const [state, at] of Object.entries(m.times)) {
      steps.append(cell("li", `${when(at)} — ${state}`, { "data-step": state }));
    }
    article.append(steps);
    if (m.events.length) {
      const events = document.createElement("ol");
      events.className = "history";
      for (const e of m.events) {
        const words = [e.statustitle, e.error].filter(Boolean).join(": ");
        events.append(cell("li", `${when(e.at)} — ${e.prev || "new"} → ${e.state}${words ? ` (${words})` : ""}`));
      }
      article.append(cell("h4", "Events"), events);
    }
    return article;
  }

  async function lookup(query) {
    const out = $("#lookup-result");
    out.replaceChildren(cell("p", "Looking…"));
    try {
      const found = await api(`/v1/lookup?q=${encodeURIComponent(query)}`);
      const since = found.scanned_since_ms ? when(new Date(found.scanned_since_ms).toISOString()) : null;
      const scope = `Read ${num(found.scanned_events)} recent events${since ? ` (back to ${since})` : ""}` +
        `${found.complete ? ", the whole stream" : ""}.`;
      const head = cell("p", found.messages.length
        ? `${found.messages.length} message(s) for “${found.query}”. ${scope}`
        : `Nothing found for “${found.query}” (as ${found.kinds.join(", ") || "nothing known"}). ${scope}`,
      { class: "hint", "data-found": String(found.messages.length) });
      out.replaceChildren(head, ...found.messages.map(renderFound));
    } catch (err) {
      out.replaceChildren(cell("p", err.message, { class: "error" }));
    }
  }

  // --- events ----------------------------------------------------------------------------

  const events = { paused: false, buffered: [], newest: null, source: null };

  function eventRow(e) {
    const words = [e.status !== null ? String(e.status) : "", e.statustitle, e.error]
      .filter(Boolean).join(" ");
    return row([
      cell("td", when(e.at)),
      cell("th", e.id, { scope: "row" }),
      cell("td", `${e.prev || "new"} → ${e.state}`),
      cell("td", e.device_id === null ? "–" : `${e.device_id} / ${e.sim}`),
      cell("td", words || "–", { class: "words" }),
    ], { "data-event": e.event_id, class: e.final ? "final" : "" });
  }

  function showEvents(list) {
    const body = $("#events-table tbody");
    if (body.querySelector("td[colspan]")) body.replaceChildren();
    body.prepend(...list.map(eventRow));
    while (body.rows.length > EVENTS_KEPT) body.lastElementChild.remove();
    if (!body.rows.length) fill(body, [], "No events yet", 5);
  }

  function onEvent(message) {
    const e = JSON.parse(message.data);
    if (events.paused) {
      events.buffered.unshift(e);
      $("#paused-note").textContent = `Paused: ${events.buffered.length} new event(s) held.`;
    } else {
      showEvents([e]);
    }
  }

  function follow() {
    const from = events.newest ? `?last_event_id=${encodeURIComponent(events.newest)}` : "";
    events.source = new EventSource(`/v1/events${from}`);
    events.source.onmessage = onEvent;
  }

  function togglePause() {
    const button = $("#pause");
    events.paused = !events.paused;
    button.setAttribute("aria-pressed", String(events.paused));
    button.textContent = events.paused ? "Resume" : "Pause";
    if (!events.paused) {
      showEvents(events.buffered);
      events.buffered = [];
      $("#paused-note").textContent = "";
    } else {
      $("#paused-note").textContent = "Paused: new events are held.";
    }
  }

  async function startEvents() {
    const recent = await api("/v1/events/recent?limit=50");
    events.newest = recent.length ? recent[0].event_id : null;
    fill($("#events-table tbody"), [], "No events yet", 5);
    showEvents(recent);
    follow();
  }

  // --- the loop --------------------------------------------------------------------------

  let devicesAt = 0;

  async function refresh() {
    try {
      const wantDevices = Date.now() - devicesAt >= DEVICES_MS;
      const [stats, history, dead, devices] = await Promise.all([
        api("/v1/stats"),
        api("/v1/history?minutes=60"),
        api(`/v1/dead?limit=${DEAD_SHOWN}`),
        wantDevices ? api("/v1/devices") : Promise.resolve(null),
      ]);
      if (devices) {
        view.devices = devices;
        devicesAt = Date.now();
      }
      view.stats = stats;
      renderTotals(stats, dead.length);
      renderLanes(stats, view.devices);
      renderHistory(history);
      renderDead(dead);
      setStatus(`Live · updated ${clock(stats.at)}`);
      document.body.dataset.statsAt = String(stats.at);
      if (!view.painted) {
        view.painted = true;
        performance.mark("relay:first-data");
        document.body.dataset.ready = "1";
      }
    } catch (err) {
      setStatus(`Not updating: ${err.message}`, true);
    }
  }

  function loop() {
    refresh().finally(() => setTimeout(loop, POLL_MS));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#pause").addEventListener("click", togglePause);
    $("#lookup-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      lookup($("#q").value.trim());
    });
    if (!CAN_ACT) $("#dead-note").textContent += " This key may read them; retry and purge need an admin key.";
    loop();
    startEvents().catch((err) => setStatus(`Events: ${err.message}`, true));
  });
})();
