// The live page of a p2pbft replica set. It reads one server-sent event stream (../v1/events; see
// package ui for the events) and renders: the replicas, a swimlane of the last slots, the view changes,
// throughput and latency. Plain script, no dependency: it is embedded in the binary.
"use strict";

(function () {
  const LANE_SLOTS = 32; // sequence numbers shown in the swimlane
  const WINDOW_NS = 10e9; // throughput and latency window
  const LOG_MAX = 30;

  const $ = (id) => document.getElementById(id);
  let hello = null;
  let reps = new Map(); // index -> {info, snap, slots: Map("view/seq" -> slot), vcs: Map(view -> vc), card}
  let now = 0; // the server's clock (ns) at the last tick
  let lastTick = 0; // the browser's clock (ms) at the last tick
  let maxView = -1;
  let dirty = false; // records changed since the swimlane was drawn

  function name(i) {
    const r = reps.get(i);
    return r ? r.info.name : "replica " + i;
  }

  function log(msg) {
    const li = document.createElement("li");
    const t = document.createElement("time");
    const d = new Date();
    t.dateTime = d.toISOString();
    t.textContent = d.toLocaleTimeString();
    li.append(t, document.createTextNode(msg));
    const ol = $("log");
    ol.append(li);
    while (ol.children.length > LOG_MAX) ol.firstElementChild.remove();
    ol.scrollTop = ol.scrollHeight;
  }

  function setConn(state, text) {
    const c = $("conn");
    if (c.dataset.state !== state || c.textContent !== text) {
      c.dataset.state = state;
      c.textContent = text;
    }
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    e.append(...children);
    return e;
  }

  // ---- replicas ----

  function buildCards() {
    const ul = $("replicas");
    ul.replaceChildren();
    for (const r of reps.values()) {
      const id = "rep-" + r.info.index;
      const fields = {};
      const dl = el("dl", {});
      for (const [key, label] of [["state", "State"], ["role", "Role"], ["view", "View"], ["height", "Height"],
        ["peers", "Reachable peers"], ["pending", "Pending requests"], ["api", "API"]]) {
        fields[key] = el("dd", { "data-field": key }, "–");
        dl.append(el("dt", {}, label), fields[key]);
      }
      if (r.info.api) {
        fields.api.replaceChildren(el("a", { href: "http://" + r.info.api + "/ui/" }, r.info.api));
      } else if (hello.mode === "replica") {
        fields.api.textContent = location.host; // the replica serves this page itself
      }
      const card = el("li", { class: "replica", id: id, "data-replica": String(r.info.index), "data-up": "unknown" },
        el("h3", { id: id + "-h" }, r.info.name), dl);
      card.setAttribute("aria-labelledby", id + "-h");
      if (hello.actions && hello.actions.length) {
        const acts = el("div", { class: "actions", role: "group" });
        acts.setAttribute("aria-label", "Fault injection for " + r.info.name);
        for (const a of hello.actions) {
          if (a === "heal") continue;
          const b = el("button", { type: "button", "data-action": a, "data-replica": r.info.name }, a);
          b.setAttribute("aria-label", a + " " + r.info.name);
          b.addEventListener("click", () => control(a, r.info.name, b));
          acts.append(b);
        }
        card.append(acts);
      }
      r.card = card;
      r.fields = fields;
      ul.append(card);
    }
  }

  function updateCard(r, prev) {
    const s = r.snap;
    const st = s.status;
    const f = r.fields;
    let state;
    if (s.up) state = "up";
    else if (s.running === false) state = "stopped";
    else if (s.running === true) state = "not answering";
    else state = "down";
    f.state.replaceChildren(el("span", { class: s.up ? "state-up" : "state-down" }, state));
    if (!s.up && s.error) f.state.title = s.error;
    r.card.dataset.up = String(!!s.up);
    if (st) {
      let role = st.primary === st.replica ? "primary" : "backup";
      if (st.mode && st.mode !== "normal") role += " (" + st.mode + ")";
      r.card.dataset.role = st.primary === st.replica ? "primary" : "backup";
      f.role.textContent = role;
      f.view.textContent = String(st.view);
      f.height.textContent = String(st.height);
      const reach = (st.reachable || []).filter((i) => i !== st.replica).map((i) => "node" + i);
      f.peers.textContent = reach.length ? reach.join(", ") + " (" + reach.length + " of " + (st.n - 1) + ")" : "none";
      f.pending.textContent = String(st.pending);
    } else {
      // Keep the last known view and height, said as such: a replica that is down has no role.
      r.card.dataset.role = "unknown";
      f.role.textContent = "unknown (not answering)";
      for (const k of ["view", "height"]) {
        if (f[k].textContent !== "–" && !f[k].textContent.endsWith("(last known)")) f[k].textContent += " (last known)";
      }
      f.peers.textContent = "–";
      f.pending.textContent = "–";
    }
    if (!s.trace_enabled && s.up) f.state.append(" (trace records off)");
    // Announce changes a watcher cares about (the log region is aria-live).
    if (prev && prev.up !== s.up) log(r.info.name + (s.up ? " is up" : " is " + state + (s.error ? ": " + s.error : "")));
    if (st && prev && prev.status && prev.status.mode !== st.mode) {
      log(r.info.name + " is in mode " + st.mode + " (view " + st.view + ")");
    }
    if (st && st.view > maxView) {
      if (maxView >= 0) log("view " + st.view + " reached by " + r.info.name + " (primary node" + st.primary + ")");
      maxView = st.view;
    }
  }

  // ---- control (testnet mode) ----

  async function control(action, replica, button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    log(action + " " + replica + ": sent");
    try {
      const resp = await fetch(hello.control, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ action: action, replica: replica }),
      });
      const body = await resp.json().catch(() => ({}));
      if (resp.ok) log(action + " " + replica + ": done" + (body.took_ms !== undefined ? " in " + body.took_ms + " ms" : ""));
      else log(action + " " + replica + ": failed: " + (body.error || resp.status));
    } catch (e) {
      log(action + " " + replica + ": failed: " + e);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  // ---- swimlane ----

  function phase(s) {
    if (s.executed) return ["executed", "E"];
    if (s.committed) return ["committed", "C"];
    if (s.prepared) return ["prepared", "P"];
    if (s.pre_prepare_sent || s.pre_prepare_received) return ["preprepare", "PP"];
    return null;
  }

  const RANK = { preprepare: 1, prepared: 2, committed: 3, executed: 4 };
  function rank(s) {
    const p = phase(s);
    return p ? RANK[p[0]] : 0;
  }

  // bySeq: seq -> the record of each replica that got furthest for that seq (a seq re-proposed after a view
  // change has a record per view; the old view's may be the one that executed), seqView: seq -> the
  // highest view any replica has a record of, and execView: seq -> the lowest view it executed in at any
  // replica. A NEW-VIEW re-proposes every sequence number above the stable checkpoint, those that executed
  // in the old view too, so the view a seq executed in, not the highest one seen, says where a view starts.
  function bySeq() {
    const out = new Map();
    const seqView = new Map();
    const execView = new Map();
    for (const r of reps.values()) {
      for (const s of r.slots.values()) {
        let m = out.get(s.seq);
        if (!m) out.set(s.seq, (m = new Map()));
        seqView.set(s.seq, Math.max(seqView.get(s.seq) ?? 0, s.view));
        if (s.executed) execView.set(s.seq, Math.min(execView.get(s.seq) ?? Infinity, s.view));
        const cur = m.get(r.info.index);
        if (!cur || rank(s) > rank(cur) || (rank(s) === rank(cur) && s.view > cur.view)) m.set(r.info.index, s);
      }
    }
    out.seqView = seqView;
    out.execView = execView;
    return out;
  }

  function renderLanes(seqs) {
    const keys = [...seqs.keys()].sort((a, b) => a - b).slice(-LANE_SLOTS);
    $("lanes-empty").hidden = keys.length > 0;
    const head = el("tr", {}, el("th", { scope: "col" }, "Replica"));
    const viewOf = (seq) => seqs.execView.get(seq) ?? seqs.seqView.get(seq);
    const newView = new Set();
    keys.forEach((seq, k) => {
      const v = viewOf(seq);
      if (k > 0 && v > viewOf(keys[k - 1])) newView.add(seq);
      const th = el("th", { scope: "col", "data-seq": String(seq), title: "seq " + seq + ", view " + v }, String(seq));
      if (newView.has(seq)) {
        th.className = "vc";
        th.setAttribute("aria-label", "seq " + seq + ", first slot of view " + v);
      }
      head.append(th);
    });
    const body = [];
    for (const r of reps.values()) {
      const tr = el("tr", { "data-replica": String(r.info.index) }, el("th", { scope: "row" }, r.info.name));
      for (const seq of keys) {
        const s = seqs.get(seq).get(r.info.index);
        const td = el("td", { "data-seq": String(seq) });
        if (newView.has(seq)) td.className = "vc";
        const p = s && phase(s);
        if (p) {
          td.append(el("span", { class: "cell ph-" + p[0] }, p[1]));
          td.dataset.phase = p[0];
          td.title = r.info.name + ", seq " + seq + ", view " + s.view + ": " + p[0] +
            (s.requests ? ", " + s.requests + " request" + (s.requests > 1 ? "s" : "") : "");
          td.setAttribute("aria-label", td.title);
        } else {
          td.setAttribute("aria-label", r.info.name + ", seq " + seq + ": no record");
        }
        tr.append(td);
      }
      body.push(tr);
    }
    const t = $("lanes");
    t.tHead.replaceChildren(head);
    t.tBodies[0].replaceChildren(...body);
  }

  // ---- throughput and latency ----

  function fmtMs(ns) {
    return ns >= 1e9 ? (ns / 1e9).toFixed(2) + " s" : (ns / 1e6).toFixed(1) + " ms";
  }

  function renderMetrics(seqs) {
    if (!now) return;
    let reqs = 0, slots = 0;
    const lat = [];
    for (const m of seqs.values()) {
      // The first execution of the seq at any replica shown, and the first pre-prepare of that view.
      let first = null;
      for (const s of m.values()) if (s.executed && (!first || s.executed < first.executed)) first = s;
      if (!first || first.executed < now - WINDOW_NS) continue;
      let pp = 0;
      for (const r of reps.values()) {
        const s = r.slots.get(first.view + "/" + first.seq);
        const t = s && (s.pre_prepare_sent || s.pre_prepare_received);
        if (t && (!pp || t < pp)) pp = t;
      }
      slots++;
      reqs += first.requests || 0;
      if (pp && first.executed >= pp) lat.push(first.executed - pp);
    }
    lat.sort((a, b) => a - b);
    $("m-tput").textContent = (reqs / (WINDOW_NS / 1e9)).toFixed(1) + " req/s";
    $("m-slots").textContent = slots + " (" + (slots / (WINDOW_NS / 1e9)).toFixed(1) + "/s)";
    $("m-p50").textContent = lat.length ? fmtMs(lat[Math.floor(lat.length / 2)]) : "–";
    $("m-max").textContent = lat.length ? fmtMs(lat[lat.length - 1]) : "–";
  }

  // ---- view changes ----

  function renderViewChanges() {
    const views = new Map(); // view -> Map(replica -> record)
    for (const r of reps.values()) {
      for (const vc of r.vcs.values()) {
        if (!views.has(vc.view)) views.set(vc.view, new Map());
        views.get(vc.view).set(r.info.index, vc);
      }
    }
    const ol = $("view-changes");
    const items = [...views.keys()].sort((a, b) => a - b).map((v) => {
      const recs = views.get(v);
      // Who sent a VIEW-CHANGE: the replicas shown that sent one, and those they received one from.
      const senders = new Set();
      for (const [i, vc] of recs) {
        if (vc.view_change_sent) senders.add(i);
        for (const v of vc.view_changes_received || []) senders.add(v.from);
      }
      const sent = [...senders].sort((a, b) => a - b).map((i) => "node" + i);
      let start = 0, nv = 0, fc = 0, fcSeq = 0, primary = null;
      for (const [i, vc] of recs) {
        if (vc.view_change_sent && (!start || vc.view_change_sent < start)) start = vc.view_change_sent;
        const t = vc.new_view_sent || vc.new_view_received;
        if (t && (!nv || t < nv)) nv = t;
        if (vc.new_view_sent) primary = i;
        if (vc.first_commit && (!fc || vc.first_commit < fc)) { fc = vc.first_commit; fcSeq = vc.first_commit_seq; }
      }
      let text = "View " + v + ": VIEW-CHANGE sent by " + (sent.length ? sent.join(", ") : "none shown");
      if (primary !== null) text += "; NEW-VIEW sent by " + name(primary);
      if (nv && start) text += " after " + fmtMs(nv - start);
      else if (!nv) text += "; waiting for NEW-VIEW";
      if (fc) text += "; first commit (seq " + fcSeq + ")" + (start ? " " + fmtMs(fc - start) + " after the first VIEW-CHANGE" : "");
      const li = el("li", { "data-view": String(v), "data-complete": String(!!fc) }, text);
      return li;
    });
    ol.replaceChildren(...items);
    $("vc-empty").hidden = items.length > 0;
  }

  // ---- stream ----

  // render redraws the swimlane and the view changes only when records changed (a table redrawn under a
  // screen reader's cursor for nothing is a nuisance), and the metrics on every tick (their window moves).
  function render() {
    const seqs = bySeq();
    if (dirty) {
      renderLanes(seqs);
      renderViewChanges();
      dirty = false;
    }
    renderMetrics(seqs);
  }

  function onHello(h) {
    hello = h;
    reps = new Map();
    maxView = -1;
    for (const info of h.replicas) reps.set(info.index, { info, snap: null, slots: new Map(), vcs: new Map() });
    $("chain").textContent = "· chain " + h.chain_id + " · n=" + h.n + ", f=" + h.f;
    $("scope").textContent = h.mode === "testnet"
      ? "Every replica of this testnet, polled by the testnet process every " + h.interval_ms + " ms."
      : "This page is served by " + (h.replicas[0] ? h.replicas[0].name : "a replica") +
        ": it shows that replica's own records and which peers it reaches (it does not know the other replicas' HTTP APIs).";
    $("global-actions").hidden = !(h.actions || []).includes("heal");
    buildCards();
    dirty = true;
    log("connected (" + h.mode + " page, " + h.replicas.length + " replica" + (h.replicas.length > 1 ? "s" : "") + ")");
  }

  function connect() {
    const es = new EventSource("../v1/events");
    const on = (type, fn) => es.addEventListener(type, (e) => fn(JSON.parse(e.data)));
    on("hello", onHello);
    on("replica", (ev) => {
      const r = reps.get(ev.replica);
      if (!r) return;
      const prev = r.snap;
      r.snap = ev;
      updateCard(r, prev);
    });
    on("slots", (ev) => {
      const r = reps.get(ev.replica);
      if (!r) return;
      for (const s of ev.slots) r.slots.set(s.view + "/" + s.seq, s);
      dirty = true;
      // Keep the newest records only: the page lives for hours.
      if (r.slots.size > 4 * LANE_SLOTS) {
        const ks = [...r.slots.values()].sort((a, b) => a.seq - b.seq || a.view - b.view);
        for (const s of ks.slice(0, ks.length - 2 * LANE_SLOTS)) r.slots.delete(s.view + "/" + s.seq);
      }
    });
    on("view_changes", (ev) => {
      const r = reps.get(ev.replica);
      if (!r) return;
      for (const vc of ev.view_changes) r.vcs.set(vc.view, vc);
      dirty = true;
    });
    on("tick", (ev) => {
      now = ev.now;
      lastTick = Date.now();
      setConn("live", "Live");
      render();
    });
    es.onerror = () => setConn("error", "Disconnected: reconnecting…");
  }

  // A stream that stops ticking (a hung server) says so.
  setInterval(() => {
    if (lastTick && hello && Date.now() - lastTick > Math.max(3000, 4 * hello.interval_ms)) {
      // A constant text: the status region is live, and a counter would be read out every second.
      setConn("stale", "No update for a few seconds: is the server still running?");
    }
  }, 1000);

  $("heal").addEventListener("click", (e) => control("heal", "all", e.currentTarget));
  connect();
})();
