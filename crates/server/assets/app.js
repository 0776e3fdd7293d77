// medkeeper dashboard: plain JS, no framework. Live through Server-Sent Events, never polling.
// Every piece of data is inserted with textContent / createElement, never as HTML.
"use strict";
window.__loadCount = (window.__loadCount || 0) + 1;

(function () {
  const TOKEN_KEY = "medkeeper.token";
  const streams = [];
  let token = null;

  // ---------- small helpers ----------
  const $ = (id) => document.getElementById(id);

  // h("td", {class: "x", data: {order: id}}, "text", childNode, ...)
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "data") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function short(id) {
    id = String(id || "");
    return id.length > 12 ? id.slice(0, 10) + "…" : id;
  }

  function idCode(id) {
    return h("code", { class: "id", title: id }, short(id));
  }

  function duration(s) {
    s = Math.max(0, Math.round(Number(s) || 0));
    if (s < 60) return s + " s";
    const m = Math.round(s / 60);
    if (m < 60) return m + " min";
    const hh = Math.floor(m / 60), mm = m % 60;
    return hh + " h" + (mm ? " " + mm + " min" : "");
  }

  function minutes(s) {
    const m = Math.max(1, Math.round((Number(s) || 0) / 60));
    return m === 1 ? "about 1 minute" : "about " + m + " minutes";
  }

  function setStatus(msg, kind) {
    const el = $("status");
    el.textContent = msg || "";
    el.hidden = !msg;
    el.className = "status" + (kind ? " status-" + kind : "");
  }

  // ---------- API ----------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, opts) {
    opts = opts || {};
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method: opts.method || "GET",
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      });
    } catch (e) {
      throw new ApiError(0, "network", "cannot reach the server (" + e.message + ")");
    }
    const text = await res.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!res.ok) {
      const err = body && body.error ? body.error : {};
      throw new ApiError(res.status, err.code || "http_" + res.status,
        err.message || res.status + " " + res.statusText);
    }
    return body;
  }

  function errText(what, e) {
    const code = e && e.code ? " [" + e.code + "]" : "";
    return what + ": " + (e && e.message ? e.message : String(e)) + code;
  }

  function showError(what, e) {
    setStatus(errText(what, e), "error");
  }

  // An EventSource with a visible connected / reconnecting indicator. The browser reconnects
  // by itself after a dropped connection; if it gives up (an HTTP error), we retry with backoff.
  // `handlers` maps event names to callbacks; `indicators` is one badge or a list of them.
  function stream(path, handlers, indicators) {
    const entry = { es: null, timer: null, closed: false, delay: 1000 };
    const badges = [].concat(indicators || []);
    const set = (state, text) => {
      for (const b of badges) {
        b.dataset.state = state;
        b.lastChild.textContent = text;
      }
    };
    const open = () => {
      if (entry.closed) return;
      const sep = path.includes("?") ? "&" : "?";
      const es = new EventSource(path + sep + "access_token=" + encodeURIComponent(token));
      entry.es = es;
      set("connecting", "connecting");
      es.onopen = () => { entry.delay = 1000; set("live", "live"); };
      for (const [event, onData] of Object.entries(handlers)) {
        es.addEventListener(event, (ev) => {
          set("live", "live");
          let data;
          try { data = JSON.parse(ev.data); } catch (e) { showError("bad event on " + path, e); return; }
          onData(data);
        });
      }
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) {
          set("offline", "offline, retrying");
          es.close();
          entry.timer = setTimeout(open, entry.delay);
          entry.delay = Math.min(entry.delay * 2, 30000);
          checkAuth();
        } else {
          set("reconnecting", "reconnecting");
        }
      };
    };
    entry.close = () => {
      entry.closed = true;
      clearTimeout(entry.timer);
      if (entry.es) entry.es.close();
    };
    streams.push(entry);
    open();
    return entry;
  }

  function liveBadge(label) {
    return h("span", { class: "live", data: { state: "connecting" }, title: label },
      h("span", { class: "live-dot", "aria-hidden": "true" }), h("span", {}, "connecting"));
  }

  async function checkAuth() {
    try { await api("/api/whoami"); } catch (e) {
      if (e.status === 401) signOut(errText("Your token is no longer valid", e));
    }
  }

  // ---------- token and start ----------
  function readToken() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      const t = decodeURIComponent(m[1]);
      sessionStorage.setItem(TOKEN_KEY, t);
      history.replaceState(null, "", location.pathname + location.search);
      return t;
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function signOut(message) {
    while (streams.length) streams.pop().close();
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    $("view").replaceChildren();
    $("cluster").replaceChildren();
    $("who").textContent = "";
    $("alarm-badge").hidden = true;
    document.title = "medkeeper";
    $("signout").hidden = true;
    $("signin").hidden = false;
    setStatus(message || "", message ? "error" : "");
    $("token-input").focus();
  }

  async function start() {
    token = readToken();
    if (!token) { signOut(); return; }
    $("signin").hidden = true;
    let me;
    try { me = await api("/api/whoami"); } catch (e) {
      if (e.status === 401) { signOut(errText("Sign-in failed", e)); return; }
      showError("Cannot load the dashboard", e);
      return;
    }
    setStatus("");
    $("signout").hidden = false;
    $("who").textContent = me.role === "patient" ? "Patient" : "Signed in as " + me.role;
    const params = new URLSearchParams(location.search);
    if (me.role === "patient") {
      patientView(me.patient);
    } else if (location.pathname === "/patient") {
      const c = cluster();
      stream("/api/cluster/events", { cluster: c.render }, c.live);
      patientView(params.get("id"));
    } else {
      staffView(cluster(), me.role);
    }
  }

  // ---------- cluster header ----------
  function cluster() {
    const box = $("cluster");
    const body = h("span", { class: "cluster-body" }, "cluster …");
    const live = liveBadge("cluster stream");
    box.replaceChildren(body, live);
    const render = (c) => {
      const members = (c.members || []).map((m) => {
        const leader = m.id === c.leader;
        return h("li", { class: leader ? "member leader" : "member", title: m.url || "" },
          leader ? h("span", { "aria-hidden": "true" }, "★ ") : null, m.id,
          leader ? h("span", { class: "sr-only" }, " (leader)") : null);
      });
      body.replaceChildren(
        c.hospital ? h("strong", { class: "hospital" }, c.hospital + " · ") : null,
        h("span", { class: "cl-label" }, "Instance "), h("strong", {}, c.instance || "?"),
        h("span", { class: "cl-label" }, " · Leader "),
        h("strong", {}, c.leader || "none"),
        h("span", { class: "cl-label" }, " · " + members.length + (members.length === 1 ? " member" : " members")),
        h("ul", { class: "members", "aria-label": "cluster members" }, members));
    };
    api("/api/cluster").then(render, (e) => showError("Cluster", e));
    return { render, live };
  }

  // ---------- staff view ----------
  // One stream for every pool and the cluster: a browser holds only six connections to a
  // server, and an open stream holds one.
  async function staffView(clusterBox, role) {
    $("view-name").textContent = "Units and queues";
    document.title = "medkeeper — units and queues";
    const view = $("view");
    view.replaceChildren(h("p", { class: "muted" }, "Loading pools…"));
    let pools;
    try { pools = await api("/api/pools"); } catch (e) { showError("Pools", e); return; }
    const grid = h("div", { class: "pools" });
    const alarms = alarmPanel(role);
    view.replaceChildren(h("h1", { class: "sr-only" }, "Units and queues"), alarms.el, grid);
    const sections = {};
    const badges = [clusterBox.live, alarms.live];
    for (const p of pools) {
      const sec = poolSection(p);
      sections[p.pool + ":" + p.name] = sec;
      badges.push(sec.live);
      grid.append(sec.el);
    }
    stream("/api/events", {
      pool: (d) => { const sec = sections[d.pool + ":" + d.name]; if (sec) sec.render(d); },
      cluster: clusterBox.render,
      alarms: alarms.render,
    }, badges);
  }

  function poolSection(p) {
    const hid = "pool-" + p.pool + "-" + p.name;
    const live = liveBadge(p.name + " stream");
    const summary = h("p", { class: "summary", "aria-live": "polite" });
    const body = h("div", { class: "pool-body" });
    const sec = h("section", { class: "pool", data: { pool: p.name, kind: p.pool }, "aria-labelledby": hid },
      h("div", { class: "pool-head" },
        h("h2", { id: hid }, p.name, " ", h("span", { class: "kind" }, p.pool === "department" ? "department" : "equipment")),
        live),
      summary, body);
    renderPool(sec, summary, body, { units: p.units || [], queue: null, queue_length: p.queue_length });
    return { el: sec, live, render: (data) => renderPool(sec, summary, body, data) };
  }

  const STATUS = {
    "available": { icon: "●", text: "available" },
    "in-use": { icon: "◉", text: "in use" },
    "maintenance": { icon: "▲", text: "maintenance" },
    "offline": { icon: "○", text: "offline" },
  };

  function renderPool(sec, summary, body, data) {
    const units = data.units || [];
    const inUse = units.filter((u) => u.status === "in-use").length;
    const inService = units.filter((u) => u.status !== "offline" && u.status !== "maintenance").length;
    const pct = inService ? Math.round((100 * inUse) / inService) : 0;
    const waiting = data.queue ? data.queue.length : (data.queue_length || 0);
    sec.dataset.waiting = String(waiting);
    const out = units.length - inService;
    summary.textContent = waiting + " waiting · " +
      (inService ? inUse + " of " + inService + " in use" : "none in service") +
      (out ? " · " + out + " out of service" : "");

    const bar = h("div", { class: "util" },
      h("div", { class: "util-label" }, h("span", {}, "Utilisation"), h("strong", {}, inService ? pct + "%" : "no unit in service")),
      h("div", { class: "util-track", role: "progressbar", "aria-label": "Utilisation",
        "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct,
        "aria-valuetext": inUse + " of " + inService + " units in use" },
        h("div", { class: "util-fill" + (pct >= 100 ? " full" : ""), style: "width:" + pct + "%" })));

    const cards = h("ul", { class: "units", "aria-label": "units" }, units.map(unitCard));
    body.replaceChildren(bar, cards, queueTable(data.queue));
  }

  function unitCard(u) {
    const st = STATUS[u.status] || { icon: "?", text: u.status };
    return h("li", { class: "unit st-" + u.status, data: { unit: u.name, status: u.status } },
      h("div", { class: "unit-top" },
        h("span", { class: "unit-name" }, u.name),
        h("span", { class: "badge st-badge" }, h("span", { "aria-hidden": "true" }, st.icon + " "), st.text)),
      u.status === "in-use"
        ? h("div", { class: "unit-occ" }, "Patient ", patientLink(u.patient), h("br"), "Order ", idCode(u.order))
        : null,
      u.since_ms ? h("div", { class: "unit-since muted" }, "since " + new Date(u.since_ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" })) : null,
      (u.capabilities || []).length
        ? h("ul", { class: "caps", "aria-label": "capabilities" }, u.capabilities.map((c) => h("li", {}, c)))
        : null);
  }

  function patientLink(id) {
    if (!id) return "—";
    return h("a", { href: "/patient?id=" + encodeURIComponent(id), title: id }, short(id));
  }

  function prioBadge(p) {
    return h("span", { class: "badge prio prio-" + p }, p);
  }

  function queueTable(queue) {
    if (queue === null) return h("p", { class: "muted" }, "Loading queue…");
    if (!queue.length) return h("p", { class: "empty" }, "No one waiting.");
    const maxWait = Math.max(60, ...queue.map((r) => r.waited_s || 0));
    const now = Date.now();
    const rows = queue.map((r) => h("tr", { data: { order: r.order } },
      h("td", { class: "num" }, r.position),
      h("td", {}, patientLink(r.patient)),
      h("td", {}, idCode(r.order)),
      h("td", {}, prioBadge(r.priority),
        r.effective_priority && r.effective_priority !== r.priority
          ? h("span", { class: "aged" }, " → ", prioBadge(r.effective_priority), h("span", { class: "sr-only" }, " after waiting"))
          : null),
      h("td", { class: "num" },
        h("span", { class: "waited", data: { base: r.waited_s || 0, at: now } }, duration(r.waited_s)),
        h("span", { class: "wait-bar", "aria-hidden": "true" },
          h("span", { style: "width:" + Math.round((100 * (r.waited_s || 0)) / maxWait) + "%" }))),
      h("td", { class: "num" }, r.estimated_wait_s ? duration(r.estimated_wait_s) : "next"),
      h("td", {}, (r.capabilities || []).join(", ") || "—")));
    const head = ["#", "Patient", "Order", "Priority", "Waited", "Est. wait", "Needs"]
      .map((t) => h("th", { scope: "col" }, t));
    return h("div", { class: "table-wrap" },
      h("table", { class: "queue" },
        h("caption", {}, "Queue, in dispatch order"),
        h("thead", {}, h("tr", {}, head)),
        h("tbody", {}, rows)));
  }

  // "Waited" and "3 min ago" keep counting between events (a local clock, not a request).
  setInterval(() => {
    for (const el of document.querySelectorAll(".waited[data-at]")) {
      el.textContent = duration(Number(el.dataset.base) + (Date.now() - Number(el.dataset.at)) / 1000);
    }
    for (const el of document.querySelectorAll(".ago[data-ms]")) el.textContent = ago(Number(el.dataset.ms));
  }, 15000);

  // ---------- alarms ----------
  // IEC 60601-1-8: high red, medium yellow, low cyan. The priority is always also written out
  // and marked by its number of exclamation marks, never shown by colour alone.
  const ALARM_PRIORITIES = [
    { key: "high", mark: "!!!", title: "High priority" },
    { key: "medium", mark: "!!", title: "Medium priority" },
    { key: "low", mark: "!", title: "Low priority" },
  ];
  const ALARM_STATES = {
    raised: { rank: 0, text: "Raised · not acknowledged" },
    acknowledged: { rank: 1, text: "Acknowledged" },
    shelved: { rank: 2, text: "Shelved" },
  };
  // Shelving is for admins and schedulers (charge nurses); the server answers 403 to others.
  const MAY_SHELVE = ["admin", "scheduler"];
  const SHELVE_FOR = [["15m", "15 minutes"], ["30m", "30 minutes"], ["1h", "1 hour"],
    ["2h", "2 hours"], ["4h", "4 hours"], ["8h", "8 hours"]];
  let alarmKeys = 0;

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }

  function ago(ms) {
    const s = (Date.now() - ms) / 1000;
    return s < 60 ? "less than a minute ago" : duration(s) + " ago";
  }

  function agoEl(ms) {
    return h("time", { class: "ago", datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString(), data: { ms } }, ago(ms));
  }

  // "equipment.MRI" -> "equipment MRI"; "cluster" -> "the whole cluster".
  function scopeText(scope) {
    scope = String(scope || "");
    if (scope === "cluster") return "the whole cluster";
    const i = scope.indexOf(".");
    return i < 0 ? scope : scope.slice(0, i) + " " + scope.slice(i + 1);
  }

  // "nurse:t-fd29de3acc1e" -> "nurse" and the token's id.
  function actorEl(by) {
    by = String(by || "?");
    const i = by.indexOf(":");
    if (i < 0) return h("strong", {}, by);
    return h("span", { class: "actor" }, h("strong", {}, by.slice(0, i)), " ", idCode(by.slice(i + 1)));
  }

  function alarmPrio(a) {
    return ALARM_PRIORITIES.find((p) => p.key === a.priority) || ALARM_PRIORITIES[ALARM_PRIORITIES.length - 1];
  }

  // The header's badge: how many active alarms nobody has acknowledged (nor shelved).
  function alarmBadge(alarms) {
    const open = alarms.filter((a) => a.state === "raised");
    const badge = $("alarm-badge");
    const top = ALARM_PRIORITIES.find((p) => open.some((a) => alarmPrio(a) === p));
    badge.className = "alarm-badge " + (top ? "ap-" + top.key : "ab-none");
    badge.querySelector(".ab-mark").textContent = top ? top.mark : "";
    badge.dataset.count = String(open.length);
    $("alarm-badge-text").textContent = open.length
      ? open.length + (open.length === 1 ? " unacknowledged alarm" : " unacknowledged alarms")
      : "No unacknowledged alarms";
    badge.title = alarms.length + " active " + (alarms.length === 1 ? "alarm" : "alarms");
    badge.hidden = false;
    document.title = (open.length ? "(" + open.length + ") " : "") + "medkeeper — units and queues";
  }

  function alarmPanel(role) {
    const mayShelve = MAY_SHELVE.includes(role);
    const live = liveBadge("alarms stream");
    const summary = h("p", { class: "summary" }, "Loading alarms…");
    const groups = {};
    const groupBox = h("div", { class: "alarm-groups" });
    for (const p of ALARM_PRIORITIES) {
      const hid = "alarms-" + p.key;
      const count = h("span", { class: "alarm-group-count" });
      const list = h("ul", { class: "alarm-list", "aria-labelledby": hid });
      const sec = h("section", { class: "alarm-group ap-" + p.key, data: { priority: p.key }, hidden: true },
        h("h3", { id: hid }, h("span", { class: "badge ap-badge" }, p.mark), " ", p.title, " ", count), list);
      groups[p.key] = { sec, list, count };
      groupBox.append(sec);
    }
    const el = h("section", { id: "alarms", class: "alarms", "aria-labelledby": "alarms-h", tabindex: "-1" },
      h("div", { class: "pool-head" }, h("h2", { id: "alarms-h" }, "Alarms"), live),
      summary,
      h("p", { class: "phi-note" }, h("strong", {}, "No patient data in notes or reasons. "),
        "They are kept with the alarm and every member of staff sees them: never write a patient's name, id or clinical details."),
      groupBox);

    const cards = new Map(); // alarm id -> its card, kept across updates (a half-typed note survives)
    let current = [];

    const draw = (alarms) => {
      current = alarms;
      const seen = new Set();
      for (const p of ALARM_PRIORITIES) {
        const g = groups[p.key];
        const mine = alarms.filter((a) => alarmPrio(a) === p).sort((a, b) =>
          ((ALARM_STATES[a.state] || {}).rank || 0) - ((ALARM_STATES[b.state] || {}).rank || 0)
          || a.raised_ms - b.raised_ms || (a.id < b.id ? -1 : 1));
        mine.forEach((a, i) => {
          let card = cards.get(a.id);
          if (!card) { card = alarmCard(a, mayShelve, applyOne); cards.set(a.id, card); }
          card.update(a);
          seen.add(a.id);
          // Move a card only if it is not in place: moving an element takes the focus from it.
          if (g.list.children[i] !== card.el) g.list.insertBefore(card.el, g.list.children[i] || null);
        });
        g.sec.hidden = !mine.length;
        g.count.textContent = "(" + mine.length + ")";
      }
      for (const [id, card] of cards) {
        if (!seen.has(id)) { card.el.remove(); cards.delete(id); }
      }
      const n = (st) => alarms.filter((a) => a.state === st).length;
      summary.textContent = alarms.length
        ? alarms.length + " active · " + n("raised") + " not acknowledged · " + n("acknowledged") +
          " acknowledged · " + n("shelved") + " shelved"
        : "No active alarms.";
      el.dataset.count = String(alarms.length);
      alarmBadge(alarms);
    };

    // The answer to our own acknowledgement or shelving: shown at once, without waiting for
    // the stream (which brings the same change, or a later one).
    function applyOne(a) {
      if (!current.some((x) => x.id === a.id)) return;
      draw(current.map((x) => (x.id === a.id ? a : x)));
    }

    // The stream's list; a card keeps an alarm's newer version (higher next_seq) than a
    // stream event computed before our own change.
    const render = (list) => {
      const alarms = (Array.isArray(list) ? list : []).filter((a) => a && a.id && a.state !== "cleared")
        .map((a) => {
          const card = cards.get(a.id);
          return card && card.alarm && card.alarm.next_seq > a.next_seq ? card.alarm : a;
        });
      draw(alarms);
    };
    return { el, live, render };
  }

  function alarmCard(a, mayShelve, applyOne) {
    const key = "alarm-" + (++alarmKeys);
    const id = a.id;
    const path = "/api/alarms/" + encodeURIComponent(id);
    const prio = h("span", { class: "badge ap-badge" });
    const text = h("p", { id: key + "-summary", class: "alarm-summary" });
    const state = h("span", { class: "badge alarm-state", tabindex: "-1" });
    const meta = h("dl", { class: "alarm-meta" });
    const error = h("p", { class: "alarm-error", role: "alert", hidden: true });

    const note = h("input", { id: key + "-note", name: "note", type: "text", maxlength: 500, autocomplete: "off",
      spellcheck: "false", placeholder: "optional, no patient data" });
    const ackBtn = h("button", { type: "submit", class: "btn-ack", data: { action: "ack" }, "aria-describedby": key + "-summary" },
      "Acknowledge");
    const ackForm = h("form", { class: "alarm-form ack-form" },
      h("label", { for: key + "-note" }, "Note"), note, ackBtn);
    ackForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = note.value.trim() ? { note: note.value.trim() } : {};
      act("Acknowledging the alarm", ackBtn, "Acknowledging…", "/ack", body, () => { note.value = ""; });
    });

    let shelveBtn = null, shelveForm = null;
    if (mayShelve) {
      const dur = h("select", { id: key + "-for", name: "for" },
        SHELVE_FOR.map(([v, t]) => h("option", { value: v, selected: v === "30m" }, t)));
      const reason = h("input", { id: key + "-reason", name: "reason", type: "text", required: true, maxlength: 500,
        autocomplete: "off", placeholder: "required, no patient data" });
      const submit = h("button", { type: "submit", data: { action: "shelve-submit" } }, "Shelve");
      const cancel = h("button", { type: "button", class: "btn-secondary" }, "Cancel");
      shelveForm = h("form", { id: key + "-shelve", class: "alarm-form shelve-form", hidden: true },
        h("label", { for: key + "-for" }, "Shelve for"), dur,
        h("label", { for: key + "-reason" }, "Reason"), reason, submit, cancel);
      shelveBtn = h("button", { type: "button", class: "btn-secondary", data: { action: "shelve" },
        "aria-expanded": "false", "aria-controls": key + "-shelve", "aria-describedby": key + "-summary" }, "Shelve…");
      const toggle = (open) => {
        shelveForm.hidden = !open;
        shelveBtn.setAttribute("aria-expanded", String(open));
        if (open) dur.focus(); else shelveBtn.focus();
      };
      shelveBtn.addEventListener("click", () => toggle(shelveForm.hidden));
      cancel.addEventListener("click", () => toggle(false));
      shelveForm.addEventListener("submit", (ev) => {
        ev.preventDefault();
        act("Shelving the alarm", submit, "Shelving…", "/shelve", { for: dur.value, reason: reason.value.trim() },
          () => { reason.value = ""; shelveForm.hidden = true; shelveBtn.setAttribute("aria-expanded", "false"); });
      });
    }
    const actions = h("div", { class: "alarm-actions" }, ackForm, shelveBtn, shelveForm);

    const el = h("li", { class: "alarm", data: { alarm: id } },
      h("div", { class: "alarm-top" }, prio, state), text, meta, actions, error);
    const card = { el, alarm: null, busy: false };

    async function act(what, btn, busyText, suffix, body, onDone) {
      if (card.busy) return;
      card.busy = true;
      error.hidden = true;
      const label = btn.textContent;
      btn.disabled = true;
      btn.textContent = busyText;
      try {
        const a = await api(path + suffix, { method: "POST", body });
        onDone();
        if (a && a.id) applyOne(a);
        // The form just used may be gone now: keep the keyboard's place on this card.
        if (el.isConnected && !btn.offsetParent) state.focus();
      } catch (e) {
        const msg = errText(what, e);
        if (el.isConnected) { error.textContent = msg; error.hidden = false; } else { showError(what, e); }
      } finally {
        card.busy = false;
        btn.disabled = false;
        btn.textContent = label;
      }
    }

    const dt = (t) => h("dt", {}, t);
    card.update = (a) => {
      card.alarm = a;
      const p = alarmPrio(a);
      const st = ALARM_STATES[a.state] || { text: a.state };
      el.className = "alarm ap-" + p.key + " as-" + a.state;
      el.dataset.priority = a.priority;
      el.dataset.state = a.state;
      prio.replaceChildren(h("span", { "aria-hidden": "true" }, p.mark + " "), a.priority + " priority");
      state.replaceChildren(st.text);
      text.textContent = a.summary || a.condition || a.rule;
      const ack = a.acknowledged, shelf = a.shelved;
      meta.replaceChildren(
        dt("Where"), h("dd", {}, scopeText(a.scope)),
        dt("Since"), h("dd", {}, agoEl(a.raised_ms), " (" + clock(a.raised_ms) + ")"),
        dt("Acknowledged"), h("dd", { class: "alarm-ack" }, ack
          ? [actorEl(ack.by), " ", agoEl(ack.at_ms), ack.note ? h("q", { class: "alarm-note" }, ack.note) : null]
          : h("span", { class: "muted" }, a.latching ? "not yet (stays until acknowledged)" : "not yet")),
        ...(shelf ? [dt("Shelved"), h("dd", { class: "alarm-shelf" }, "until " + clock(shelf.until_ms) + " by ",
          actorEl(shelf.by), shelf.reason ? h("q", { class: "alarm-note" }, shelf.reason) : null)] : []),
        dt("Escalated"), h("dd", { class: "alarm-esc" }, a.escalations
          ? a.escalations + (a.escalations === 1 ? " time" : " times") + " (priority raised while unacknowledged)"
          : "0 times"),
        dt("Rule"), h("dd", {}, a.rule, " · ", h("code", {}, a.condition || "")));
      ackForm.hidden = !!ack;
      if (shelveBtn) {
        const shelvable = a.state !== "shelved";
        shelveBtn.hidden = !shelvable;
        if (!shelvable) { shelveForm.hidden = true; shelveBtn.setAttribute("aria-expanded", "false"); }
      }
    };
    return card;
  }

  // ---------- patient view ----------
  function patientView(id) {
    $("view-name").textContent = "My exams";
    document.title = "medkeeper — my exams";
    const view = $("view");
    if (!id) {
      const input = h("input", { id: "pid", name: "id", required: true, spellcheck: "false" });
      view.replaceChildren(h("section", { class: "signin" },
        h("h1", {}, "Open a patient's page"),
        h("form", { method: "get", action: "/patient" },
          h("label", { for: "pid" }, "Patient id"), input, h("button", { type: "submit" }, "Open"))));
      return;
    }
    const live = liveBadge("patient stream");
    const title = h("h1", {}, "Your exams");
    const list = h("div", { class: "exams", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
    view.replaceChildren(h("section", { class: "patient", data: { patient: id } },
      h("div", { class: "pool-head" }, title, live),
      h("p", { class: "hint muted" }, "This page updates by itself; there is no need to refresh it."), list));
    const path = "/api/patients/" + encodeURIComponent(id);
    api(path).then((d) => {
      if (d && d.patient && d.patient.name) title.textContent = "Exams for " + d.patient.name;
      renderExams(list, d.queue || []);
    }, (e) => showError("Patient", e));
    stream(path + "/events", { patient: (d) => renderExams(list, d.queue || []) }, live);
  }

  function examText(e) {
    const pool = (e.pool && e.pool.name) || "the exam";
    switch (e.state) {
      case "queued": {
        const eta = e.estimated_wait_s > 0 ? ", " + minutes(e.estimated_wait_s) : "";
        return e.position === 1
          ? "You are next in line for " + pool + eta
          : "You are number " + (e.position || "?") + " in line for " + pool + eta;
      }
      case "called": return "Please go to " + (e.called_to || pool);
      case "in-progress": return "Your " + pool + " exam is under way" + (e.called_to ? " at " + e.called_to : "");
      case "completed": return e.results_ready ? "Your results are ready" : "Your " + pool + " exam is done. Results are not ready yet.";
      case "reported": return "Your results are ready";
      case "cancelled": return "Your " + pool + " exam was cancelled";
      case "no-show": return "You missed your call for " + pool + ". Please ask at the desk.";
      default: return pool + ": " + e.state;
    }
  }

  function renderExams(list, queue) {
    if (!queue.length) { list.replaceChildren(h("p", { class: "empty big" }, "You have no exams right now.")); return; }
    list.replaceChildren(h("ul", { class: "exam-list" }, queue.map((e) => {
      const ready = e.results_ready || e.state === "reported";
      return h("li", { class: "exam ex-" + e.state + (ready ? " ready" : ""), data: { order: e.order, state: e.state } },
        h("p", { class: "exam-text" }, examText(e)),
        h("p", { class: "exam-meta muted" }, (e.pool && e.pool.name) || "", " · ", prioBadge(e.priority),
          " · ", e.state.replace("-", " "), " · order ", idCode(e.order)));
    })));
  }

  // ---------- wiring ----------
  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token-input").value.trim();
      if (!/^mkt_[0-9a-f]+$/i.test(t)) { setStatus("A token looks like mkt_ followed by hex digits.", "error"); return; }
      sessionStorage.setItem(TOKEN_KEY, t);
      $("token-input").value = "";
      start();
    });
    $("signout").addEventListener("click", () => signOut());
    start();
  });
  // A browser keeps at most 6 HTTP/1.1 connections per server, and every open stream holds one:
  // close them before leaving, or the next page's request waits behind them.
  const closeAll = () => { while (streams.length) streams.pop().close(); };
  window.addEventListener("beforeunload", closeAll);
  window.addEventListener("pagehide", closeAll);
  window.addEventListener("pageshow", (ev) => { if (ev.persisted) location.reload(); });
})();
