/*
 * lm-gateway dashboard. Plain JS, no build step, no dependencies besides charts.js (ours).
 *
 * Data flow: one streamed request to /admin/traffic/stream (Server-Sent Events, read with fetch so
 * that it can carry the admin token as a Bearer header; EventSource cannot send headers) brings a
 * snapshot, then every new traffic entry as it is recorded, then fresh stats every two seconds.
 * Nothing is polled. Config and backend probes are fetched on load and when the operator asks.
 * With Redis (stats.cluster set) the header shows the cluster and a scope switch: the whole cluster's
 * traffic and figures, or this instance's own (?scope=...; switching reconnects the feed).
 *
 * Safety: names, errors and model output may contain markup, so this file never parses HTML. Every
 * piece of content goes through el() and ends up as textContent or a text node.
 */
(() => {
  "use strict";

  const TOKEN_KEY = "lmg.adminToken";
  const MAX_ROWS = 300;
  const STALE_MS = 8000; // no event (stats come every 2 s) for this long: reconnect
  const RETRY_MAX_MS = 10000;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    entries: [], // newest first
    stats: null,
    selected: null,
    filter: "",
    errorsOnly: false,
    tokenPrompt: null,
    scope: null, // null: the gateway's default (cluster with Redis); else "cluster" or "instance"
    feed: null, // the live feed's AbortController
  };

  const $ = (id) => document.getElementById(id);

  // -- the one way content is made ----------------------------------------------------------------

  /**
   * Create an element. props: {text, class, title, on<event>, any attribute}; children: nodes or
   * strings (strings become text nodes). Text is never interpreted as HTML.
   */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value == null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function fill(parent, ...children) {
    parent.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
  }

  // -- formatting ---------------------------------------------------------------------------------

  const dash = "—";
  const fmtInt = (n) => (n == null ? dash : Math.round(n).toLocaleString("en-US"));
  function fmtMs(ms) {
    if (ms == null) return dash;
    if (ms < 10) return `${ms.toFixed(1)} ms`;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  }
  function fmtRate(rps) {
    if (!rps) return "0/s";
    return rps >= 10
      ? `${rps.toFixed(0)}/s`
      : rps >= 0.1
        ? `${rps.toFixed(1)}/s`
        : `${(rps * 60).toFixed(1)}/min`;
  }
  const fmtPct = (r) => (r == null ? dash : `${(r * 100).toFixed(r && r < 0.1 ? 1 : 0)}%`);
  function fmtCost(usd) {
    if (usd == null) return dash;
    if (usd === 0) return "$0";
    return usd < 0.01 ? `$${usd.toFixed(5)}` : `$${usd.toFixed(2)}`;
  }
  function fmtTime(epochSecs) {
    return new Date(epochSecs * 1000).toLocaleTimeString([], { hour12: false });
  }
  function fmtAge(epochSecs) {
    const secs = Math.max(0, Date.now() / 1000 - epochSecs);
    if (secs < 60) return `${Math.round(secs)}s ago`;
    if (secs < 3600) return `${Math.round(secs / 60)}m ago`;
    return fmtTime(epochSecs);
  }
  function fmtUptime(secs) {
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${secs % 60}s`;
  }
  const statusClass = (status, ok) =>
    ok ? "s-ok" : status >= 500 || status === 0 ? "s-bad" : status === 499 ? "s-none" : "s-warn";
  const latencyClass = (ms) => (ms < 500 ? "s-ok" : ms < 2000 ? "s-warn" : "s-bad");
  const errorClass = (rate) => (!rate ? "s-ok" : rate < 0.05 ? "s-warn" : "s-bad");

  // -- the admin API ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const error = body && body.error;
      super(error && error.message ? error.message : `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  function authHeaders() {
    return state.token ? { Authorization: `Bearer ${state.token}` } : {};
  }

  async function readJson(resp) {
    try {
      return await resp.json();
    } catch (_) {
      return null;
    }
  }

  /** Call the admin API; asks for the token and retries when it answers 401. 207 is not an error. */
  async function api(path, options = {}) {
    for (;;) {
      const resp = await fetch(path, { ...options, headers: authHeaders(), cache: "no-store" });
      const body = await readJson(resp);
      if (resp.status === 401) {
        await askToken(body);
        continue;
      }
      if (!resp.ok && resp.status !== 207) throw new ApiError(resp.status, body);
      return { status: resp.status, body };
    }
  }

  // -- the token ----------------------------------------------------------------------------------

  /** Show the token dialog (once, however many calls are waiting) and resolve when one is given. */
  function askToken(body) {
    const error = body && body.error;
    const message = !error
      ? null
      : error.code === "admin_locked"
        ? `${error.message} (set the variable on the gateway and restart it)`
        : state.token
          ? error.message
          : null;
    const errorLine = $("token-error");
    errorLine.hidden = !message;
    errorLine.textContent = message || "";
    if (!state.tokenPrompt) {
      state.tokenPrompt = new Promise((resolve) => {
        const dialog = $("token-dialog");
        const form = $("token-form");
        const submit = (event) => {
          event.preventDefault();
          const token = $("token-input").value.trim();
          if (!token) return;
          state.token = token;
          sessionStorage.setItem(TOKEN_KEY, token);
          $("forget-btn").hidden = false;
          form.removeEventListener("submit", submit);
          dialog.close();
          state.tokenPrompt = null;
          resolve();
        };
        form.addEventListener("submit", submit);
        $("token-input").value = "";
        if (!dialog.open) dialog.showModal();
      });
    }
    return state.tokenPrompt;
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    location.reload();
  }

  // -- the live feed ------------------------------------------------------------------------------

  const SWITCH = "scope switch"; // the abort reason when the scope changes: reconnect at once

  /** "?scope=x" (or "&scope=x" after other parameters) once the operator picked a scope, else "". */
  const scopeParam = (sep) => (state.scope ? `${sep}scope=${encodeURIComponent(state.scope)}` : "");

  function setConnection(kind, text) {
    const pill = $("conn");
    pill.className = `pill ${kind === "live" ? "pill-ok" : kind === "wait" ? "pill-wait" : "pill-bad"}`;
    pill.textContent = text;
  }

  /** Parse one SSE block ("event: x\ndata: {...}") into {name, data}; comments are skipped. */
  function parseEvent(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
  }

  async function readEvents(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (event) onEvent(event);
      }
    }
  }

  /** Keep the feed open for as long as the page is: reconnect with backoff, re-ask for the token. */
  async function runFeed() {
    let retryMs = 500;
    let failures = 0;
    let live = false;
    for (;;) {
      const abort = new AbortController();
      state.feed = abort;
      let watchdog = null;
      const arm = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => abort.abort(), STALE_MS);
      };
      try {
        const resp = await fetch(`/admin/traffic/stream?backlog=${MAX_ROWS}${scopeParam("&")}`, {
          headers: authHeaders(),
          cache: "no-store",
          signal: abort.signal,
        });
        if (resp.status === 401) {
          await askToken(await readJson(resp));
          continue;
        }
        if (resp.status === 400 && state.scope) {
          state.scope = null; // e.g. restarted without Redis: back to the gateway's default
          continue;
        }
        if (!resp.ok || !resp.body) throw new ApiError(resp.status, await readJson(resp));
        arm();
        await readEvents(resp.body, (event) => {
          if (!live) setConnection("live", "live");
          live = true;
          failures = 0;
          retryMs = 500;
          arm();
          onFeedEvent(event);
        });
      } catch (_) {
        // The gateway went away, restarted or stalled: fall through to the retry.
      }
      clearTimeout(watchdog);
      live = false;
      if (abort.signal.reason === SWITCH) continue;
      failures += 1;
      setConnection(failures > 3 ? "bad" : "wait", failures > 3 ? "offline" : "reconnecting");
      await new Promise((resolve) => setTimeout(resolve, retryMs));
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  }

  function onFeedEvent({ name, data }) {
    if (name === "snapshot") {
      state.entries = data.entries.slice(0, MAX_ROWS);
      renderTraffic();
    } else if (name === "entries") {
      for (const entry of data.entries) addEntry(entry);
      if (data.dropped) noteDropped(data.dropped);
    } else if (name === "stats") {
      state.stats = data;
      renderStats();
    }
  }

  // -- traffic ------------------------------------------------------------------------------------

  const trafficTable = () => document.querySelector("table.traffic");

  function matches(entry) {
    if (state.errorsOnly && entry.success) return false;
    if (!state.filter) return true;
    const haystack = [
      entry.client,
      entry.profile,
      entry.requested_model,
      entry.tier,
      entry.backend,
      entry.model,
      entry.mode,
      entry.status,
      entry.error,
      entry.id,
      entry.class_label,
      entry.instance,
    ]
      .join(" ")
      .toLowerCase();
    return haystack.includes(state.filter);
  }

  // Route steps that are calls up the ladder (the rest, e.g. skip or classifier, are in the detail).
  const CALL_STEPS = new Set(["try", "failover", "answer"]);

  /** The tiers a request was sent to, in order: its route's calls, ending with the tier that served. */
  function tiersTried(entry) {
    const steps = Array.isArray(entry.route) ? entry.route : [];
    const tiers = [];
    for (const step of steps) {
      if (step && CALL_STEPS.has(step.step) && typeof step.tier === "string" && !tiers.includes(step.tier)) {
        tiers.push(step.tier);
      }
    }
    if (entry.tier && !tiers.includes(entry.tier)) tiers.push(entry.tier);
    return tiers;
  }

  function routeCell(entry) {
    const tiers = tiersTried(entry);
    const parts = [el("span", { text: entry.requested_model || dash })];
    if (tiers.length) {
      parts.push(el("span", { class: "arrow", text: " → " }));
      tiers.forEach((tier, i) => {
        if (i) parts.push(el("span", { class: "arrow", text: " ↑ " }));
        parts.push(el("b", { text: tier }));
      });
    }
    if (entry.escalated) parts.push(" ", el("span", { class: "badge s-warn", text: "escalated" }));
    return el("td", { class: "route" }, parts);
  }

  function modeCell(entry) {
    return el(
      "td",
      { class: "opt" },
      el("span", { text: entry.mode || dash }),
      entry.stream ? [" ", el("span", { class: "badge s-none", text: "stream" })] : null,
      entry.class_label != null ? [" ", el("span", { class: "chip", text: entry.class_label })] : null,
    );
  }

  function tokensText(entry) {
    if (entry.prompt_tokens == null && entry.completion_tokens == null) return dash;
    return `${fmtInt(entry.prompt_tokens)} / ${fmtInt(entry.completion_tokens)}`;
  }

  /** One entry as a <tbody>: its row, and a second row with the error when it failed. */
  function entryBody(entry) {
    const ok = entry.success;
    const latency = el("span", { class: latencyClass(entry.latency_ms), text: fmtMs(entry.latency_ms) });
    const ttfb =
      entry.ttfb_ms != null
        ? el("div", { class: "muted small", text: `first ${fmtMs(entry.ttfb_ms)}` })
        : null;
    const body = el(
      "tbody",
      {
        class: `entry${entry === state.selected ? " selected" : ""}`,
        onclick: () => showDetail(entry, body),
      },
      el(
        "tr",
        null,
        el(
          "td",
          { class: "time", title: entry.timestamp },
          fmtTime(entry.started),
          entry.instance ? el("div", { class: "instance", text: entry.instance, title: "instance" }) : null,
        ),
        el("td", { class: "opt", text: entry.client }),
        el("td", { class: "narrow-hide", text: entry.profile || dash }),
        routeCell(entry),
        modeCell(entry),
        el(
          "td",
          null,
          el("span", { class: `badge ${statusClass(entry.status, ok)}`, text: entry.status || "—" }),
        ),
        el("td", { class: "num" }, latency, ttfb),
        el("td", { class: "num opt", text: tokensText(entry) }),
        el("td", { class: "num narrow-hide", text: fmtCost(entry.cost_usd) }),
      ),
      entry.error ? el("tr", null, el("td", { class: "err", colspan: 9, text: entry.error })) : null,
    );
    return body;
  }

  function renderTraffic() {
    const table = trafficTable();
    for (const old of table.querySelectorAll("tbody.entry")) old.remove();
    const shown = state.entries.filter(matches);
    for (const entry of shown) table.append(entryBody(entry));
    renderTrafficCount(shown.length);
  }

  function addEntry(entry) {
    state.entries.unshift(entry);
    if (state.entries.length > MAX_ROWS) state.entries.length = MAX_ROWS;
    const table = trafficTable();
    if (matches(entry)) {
      const body = entryBody(entry);
      body.classList.add("fresh");
      table.insertBefore(body, $("traffic-empty").nextSibling);
      const rows = table.querySelectorAll("tbody.entry");
      for (let i = MAX_ROWS; i < rows.length; i++) rows[i].remove();
    }
    renderTrafficCount(table.querySelectorAll("tbody.entry").length);
  }

  function renderTrafficCount(shown) {
    $("traffic-empty").hidden = shown > 0;
    const total = state.entries.length;
    $("traffic-count").textContent = shown === total ? `${total} recent` : `${shown} of ${total} recent`;
  }

  function noteDropped(count) {
    const note = $("dropped");
    note.hidden = false;
    state.skipped = (state.skipped || 0) + count;
    note.textContent = `${fmtInt(state.skipped)} rows not listed (traffic faster than a list can show)`;
  }

  // -- the detail panel ---------------------------------------------------------------------------

  const DETAIL_FIELDS = [
    ["id", "Request id"],
    ["instance", "Instance"],
    ["timestamp", "Time"],
    ["client", "Client"],
    ["profile", "Profile"],
    ["endpoint", "Endpoint"],
    ["requested_model", "Requested"],
    ["tier", "Tier"],
    ["backend", "Backend"],
    ["model", "Model"],
    ["mode", "Mode"],
    ["class_label", "Class label"],
    ["escalated", "Escalated"],
    ["stream", "Stream"],
    ["status", "Status"],
    ["error", "Error"],
    ["latency_ms", "Latency"],
    ["ttfb_ms", "First chunk"],
    ["overhead_ms", "Gateway overhead"],
    ["prompt_tokens", "Prompt tokens"],
    ["completion_tokens", "Completion tokens"],
    ["cost_usd", "Cost"],
  ];

  function detailValue(key, value) {
    if (key.endsWith("_ms")) return fmtMs(value);
    if (key === "cost_usd") return fmtCost(value);
    return typeof value === "boolean" ? (value ? "yes" : "no") : String(value);
  }

  function showDetail(entry, body) {
    state.selected = entry;
    for (const old of document.querySelectorAll("tbody.entry.selected")) old.classList.remove("selected");
    body.classList.add("selected");
    $("detail-title").textContent = `Request ${entry.id}`;
    const fields = DETAIL_FIELDS.filter(([key]) => entry[key] != null && entry[key] !== "").map(
      ([key, label]) => [
        el("dt", { text: label }),
        el("dd", { class: key === "error" ? "error-text" : null, text: detailValue(key, entry[key]) }),
      ],
    );
    const known = new Set([
      ...DETAIL_FIELDS.map(([key]) => key),
      "route",
      "route_text",
      "started",
      "success",
    ]);
    const extra = Object.fromEntries(Object.entries(entry).filter(([key]) => !known.has(key)));
    fill(
      $("detail-body"),
      el("dl", { class: "fields" }, fields),
      el("h3", { text: "Routing decision (X-LMG-Route)" }),
      el("pre", { class: "code", text: entry.route_text || "refused before routing" }),
      Array.isArray(entry.route) && entry.route.length ? routeSteps(entry.route) : null,
      Object.keys(extra).length
        ? [el("h3", { text: "More" }), el("pre", { class: "code", text: JSON.stringify(extra, null, 2) })]
        : null,
    );
    $("detail").hidden = false;
  }

  /** The route's steps as a table: what happened at each tier, why, and what it cost. */
  function routeSteps(steps) {
    const cell = (value) => el("td", { text: value == null || value === "" ? dash : value });
    return el(
      "table",
      { class: "grid steps" },
      el(
        "thead",
        null,
        el(
          "tr",
          null,
          ["Step", "Tier", "Outcome", "Reason", "Time", "Cost"].map((h) => el("th", { text: h })),
        ),
      ),
      el(
        "tbody",
        null,
        steps.map((step) =>
          el(
            "tr",
            null,
            cell(step.step),
            cell(step.tier),
            cell(step.outcome ?? (step.status != null ? String(step.status) : null)),
            cell(step.reason),
            el("td", { class: "num", text: step.ms != null ? fmtMs(step.ms) : dash }),
            el("td", { class: "num", text: step.cost_usd != null ? fmtCost(step.cost_usd) : dash }),
          ),
        ),
      ),
    );
  }

  function hideDetail() {
    $("detail").hidden = true;
    state.selected = null;
    for (const old of document.querySelectorAll("tbody.entry.selected")) old.classList.remove("selected");
  }

  // -- stats: tiles, charts, ladder, backends -------------------------------------------------------

  function tile(label, value, sub, valueClass) {
    return el(
      "div",
      { class: "tile" },
      el("div", { class: "label", text: label }),
      el("div", { class: `value ${valueClass || ""}`, text: value }),
      el("div", { class: "sub", text: sub || "" }),
    );
  }

  function renderTiles(stats) {
    const recent = stats.recent;
    const totals = stats.totals;
    fill(
      $("tiles"),
      tile("Requests", fmtRate(recent.rps), `${fmtInt(totals.total)} since start`),
      tile(
        "Errors",
        fmtPct(recent.error_rate),
        `${fmtInt(recent.errors)} in the last minute`,
        errorClass(recent.error_rate),
      ),
      tile("Latency p50 / p95", `${fmtMs(recent.p50_ms)}`, `p95 ${fmtMs(recent.p95_ms)} · last minute`),
      tile("In flight", fmtInt(totals.in_flight), `${fmtInt(totals.open_streams)} streams`),
      tile(
        "Tokens",
        fmtInt(totals.prompt_tokens + totals.completion_tokens),
        `${fmtInt(totals.prompt_tokens)} in / ${fmtInt(totals.completion_tokens)} out`,
      ),
      tile("Cost", fmtCost(totals.cost_usd), `${fmtCost(recent.cost_usd)} last minute`),
    );
  }

  function cssColor(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function renderCharts(stats) {
    if (!window.LmgCharts) return;
    const series = stats.series;
    const times = series.map((p) => p.t);
    const step = stats.slot_secs;
    window.LmgCharts.draw($("chart-rate"), {
      times,
      stepSecs: step,
      series: [
        { label: "requests/s", color: cssColor("--accent"), values: series.map((p) => p.rps) },
        { label: "errors/s", color: cssColor("--bad"), values: series.map((p) => p.errors / step) },
      ],
    });
    window.LmgCharts.draw($("chart-latency"), {
      times,
      stepSecs: step,
      format: (v, decimals) => (v >= 1000 ? `${+(v / 1000).toFixed(2)}s` : v.toFixed(decimals)),
      series: [
        { label: "p50", color: cssColor("--ok"), values: series.map((p) => p.p50_ms) },
        { label: "p95", color: cssColor("--warn"), values: series.map((p) => p.p95_ms) },
        { label: "p99", color: cssColor("--bad"), values: series.map((p) => p.p99_ms) },
      ],
    });
  }

  function figure(label, value, cls) {
    return el("span", null, `${label} `, el("b", { class: cls, text: value }));
  }

  function rung(tier, busiest) {
    const priced = tier.input_cost_per_mtok != null || tier.output_cost_per_mtok != null;
    const price = priced
      ? ` · $${tier.input_cost_per_mtok ?? 0} / $${tier.output_cost_per_mtok ?? 0} per Mtok`
      : "";
    const share = busiest ? Math.round((100 * tier.requests) / busiest) : 0;
    return el(
      "li",
      { class: "rung", "data-tier": tier.tier },
      el("span", { class: "step", text: tier.index + 1 }),
      el(
        "div",
        null,
        el("div", { class: "name", text: tier.tier }),
        el("div", { class: "where", text: `${tier.backend} · ${tier.model}${price}` }),
        el(
          "div",
          { class: "figures" },
          figure("rate", fmtRate(tier.rps)),
          figure("errors", fmtPct(tier.error_rate), tier.requests ? errorClass(tier.error_rate) : null),
          figure("p50", fmtMs(tier.p50_ms)),
          figure("p95", fmtMs(tier.p95_ms)),
          figure("cost", fmtCost(tier.cost_usd)),
        ),
        el(
          "div",
          { class: "chips" },
          tier.aliases.map((alias) => el("span", { class: "chip alias", text: alias, title: "alias" })),
          tier.profiles.map((p) => el("span", { class: "chip profile", text: `${p.profile}: ${p.role}` })),
        ),
      ),
      share ? el("span", { class: "share", style: null, "data-share": share }) : null,
    );
  }

  function renderLadder(stats) {
    const busiest = Math.max(0, ...stats.ladder.map((t) => t.requests));
    fill(
      $("ladder"),
      stats.ladder.length
        ? stats.ladder.map((t) => rung(t, busiest))
        : el("li", { class: "muted", text: "No tiers configured." }),
    );
    // Widths are set through the CSSOM (the page's policy forbids inline style attributes).
    for (const bar of document.querySelectorAll("#ladder .share")) bar.style.width = `${bar.dataset.share}%`;
    $("ladder-window").textContent =
      `cheapest → most capable · last ${Math.round(stats.window_secs / 60)} min`;
    const others = stats.other_routes.map(
      (r) =>
        `${r.tier ? `${r.tier} (${r.backend})` : "refused before routing"}: ${fmtInt(r.requests)} req, ${fmtPct(r.error_rate)} errors`,
    );
    $("other-routes").textContent = others.length ? `Off the ladder: ${others.join(" · ")}` : "";
    fill(
      $("profiles"),
      stats.profiles.map((p) =>
        el("span", {
          class: "chip profile",
          text: `profile ${p.name} · ${p.mode}${p.classifier ? ` · classifier ${p.classifier}` : ""}${p.max_auto_tier ? ` · max ${p.max_auto_tier}` : ""}`,
        }),
      ),
    );
  }

  function probeCell(probe) {
    if (!probe) return el("td", { class: "muted", text: "not probed" });
    const cls = probe.ok ? "s-ok" : "s-bad";
    return el(
      "td",
      null,
      el("span", { class: `dot ${cls}` }),
      el("span", { class: cls, text: probe.ok ? "up" : "down" }),
      el("span", { class: "muted small", text: ` ${fmtAge(probe.at)}` }),
      probe.error ? el("div", { class: "error-text small", text: probe.error }) : null,
    );
  }

  function circuitCell(circuit) {
    if (!circuit) return el("td", { class: "muted", text: dash, title: "health tracking is off" });
    const cls = circuit.state === "open" ? "s-bad" : circuit.state === "half-open" ? "s-warn" : "s-ok";
    const detail =
      circuit.state === "open" && circuit.retry_in_s
        ? `retry in ${Math.ceil(circuit.retry_in_s)}s`
        : `${circuit.failures}/${circuit.window} failed`;
    const elsewhere = circuit.state === "open" && circuit.opened_elsewhere;
    return el(
      "td",
      null,
      el("span", { class: cls, text: circuit.state }),
      elsewhere
        ? [" ", el("span", { class: "small s-warn", text: "opened elsewhere", title: "by another instance" })]
        : null,
      el("div", { class: "muted small", text: detail }),
    );
  }

  function backendCell(b) {
    const gate = b.gate
      ? ` · ${b.gate.in_flight}/${b.gate.max_concurrent} busy${b.gate.queued ? `, ${b.gate.queued} queued` : ""}`
      : "";
    return el(
      "td",
      null,
      el("div", { text: b.backend }),
      el("div", { class: "muted small", text: `${b.provider}${gate}` }),
    );
  }

  function renderBackends(stats) {
    fill(
      $("backends"),
      stats.backends.map((b) =>
        el(
          "tr",
          { "data-backend": b.backend },
          backendCell(b),
          probeCell(b.probe),
          circuitCell(b.circuit),
          el("td", {
            class: `num ${b.requests ? errorClass(b.error_rate) : ""}`,
            text: b.requests ? fmtPct(b.error_rate) : dash,
          }),
          el("td", { class: "num", text: fmtRate(b.rps) }),
          el(
            "td",
            { class: "num" },
            el("button", {
              type: "button",
              class: "small-btn",
              text: "Probe",
              onclick: (e) => probe(e.currentTarget, b.backend),
            }),
          ),
        ),
      ),
    );
  }

  /** The header's cluster pill and scope switch; hidden (the page as without Redis) when no cluster. */
  function renderCluster(stats) {
    const cluster = stats.cluster;
    $("cluster").hidden = !cluster;
    if (!cluster) return;
    // Without Redis no instance can see the others: their number is unknown, not 1.
    const down = cluster.redis !== "up";
    const count = cluster.instances.length;
    const instances = down ? "instances unknown" : `${count} instance${count === 1 ? "" : "s"}`;
    const pill = $("cluster-status");
    pill.className = `pill ${down ? "pill-warn" : "pill-info"}`;
    pill.textContent = `cluster · ${instances} · redis ${down ? "down" : "up"}`;
    const queued = cluster.traffic && cluster.traffic.queued;
    pill.title = [
      `this instance: ${cluster.instance}`,
      down ? "other instances: unknown while redis is down" : `instances: ${cluster.instances.join(", ")}`,
      down && cluster.down_since ? `redis down since ${fmtTime(cluster.down_since)}` : null,
      queued ? `${fmtInt(queued)} entries waiting for redis` : null,
    ]
      .filter(Boolean)
      .join("\n");
    const scope = state.scope || stats.scope;
    for (const button of document.querySelectorAll("#cluster [data-scope]")) {
      button.setAttribute("aria-pressed", String(button.dataset.scope === scope));
    }
  }

  /** Show the cluster's or this instance's traffic: reconnect the feed with the new scope. */
  function setScope(scope) {
    if (scope === (state.scope || (state.stats && state.stats.scope))) return;
    state.scope = scope;
    state.entries = [];
    state.skipped = 0;
    $("dropped").hidden = true;
    hideDetail();
    renderTraffic();
    if (state.stats) renderCluster(state.stats);
    if (state.feed) state.feed.abort(SWITCH); // the new feed starts with its scope's stats
  }

  function renderStats() {
    const stats = state.stats;
    if (!stats) return;
    $("uptime").textContent = `up ${fmtUptime(stats.uptime_secs)}`;
    renderCluster(stats);
    renderTiles(stats);
    renderCharts(stats);
    renderLadder(stats);
    renderBackends(stats);
  }

  // -- actions: probe, config, reload ------------------------------------------------------------------

  function notice(kind, title, details) {
    const box = el(
      "div",
      { class: `notice ${kind}`, role: kind === "bad" ? "alert" : "status" },
      el("div", { class: "text" }, el("div", { text: title }), details),
      el("button", {
        type: "button",
        class: "quiet",
        "aria-label": "dismiss",
        text: "✕",
        onclick: () => box.remove(),
      }),
    );
    $("notices").append(box);
    return box;
  }

  async function refreshStats() {
    const { body } = await api(`/admin/stats${scopeParam("?")}`);
    state.stats = body;
    renderStats();
  }

  async function probe(button, backend) {
    if (button) button.disabled = true;
    try {
      await api(
        backend ? `/admin/backends/health?backend=${encodeURIComponent(backend)}` : "/admin/backends/health",
      );
      await refreshStats();
    } catch (err) {
      notice("bad", `Probe failed: ${err.message}`);
    } finally {
      if (button) button.disabled = false;
    }
  }

  async function loadConfig() {
    const { body } = await api("/admin/config");
    $("config-view").textContent = JSON.stringify(body, null, 2);
    $("config-source").textContent = body.source ? `from ${body.source}` : "";
  }

  async function loadHealth() {
    const { body } = await api("/admin/health");
    for (const old of document.querySelectorAll(".notice.setup")) old.remove();
    if (!body.ready) {
      const box = notice(
        "warn",
        "Not ready: some configured secrets are missing.",
        el(
          "ul",
          { class: "problems" },
          body.missing_secrets.map((m) => el("li", { text: m })),
        ),
      );
      box.classList.add("setup");
    }
  }

  function showReloadResult(kind, title, lines) {
    fill(
      $("reload-result"),
      el(
        "div",
        { class: `notice ${kind}`, role: kind === "bad" ? "alert" : "status", id: "reload-notice" },
        el(
          "div",
          { class: "text" },
          el("div", { text: title }),
          lines.length
            ? el(
                "ul",
                { class: "problems" },
                lines.map((line) => el("li", { text: line })),
              )
            : null,
        ),
      ),
    );
    $("reload-result").scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  async function reload() {
    const button = $("reload-btn");
    button.disabled = true;
    try {
      const { body } = await api("/admin/reload", { method: "POST" });
      showReloadResult("good", `Config reloaded from ${body.source}.`, body.warnings || []);
      await Promise.all([loadConfig(), loadHealth(), refreshStats()]);
    } catch (err) {
      const problems =
        err.body && err.body.error && Array.isArray(err.body.error.problems) ? err.body.error.problems : [];
      showReloadResult("bad", `Reload refused: ${err.message}`, problems);
    } finally {
      button.disabled = false;
    }
  }

  // -- start --------------------------------------------------------------------------------------------

  function bindControls() {
    $("reload-btn").addEventListener("click", reload);
    $("forget-btn").addEventListener("click", forgetToken);
    $("forget-btn").hidden = !state.token;
    $("probe-all-btn").addEventListener("click", (e) => probe(e.currentTarget, null));
    for (const button of document.querySelectorAll("#cluster [data-scope]")) {
      button.addEventListener("click", () => setScope(button.dataset.scope));
    }
    $("detail-close").addEventListener("click", hideDetail);
    document.addEventListener("keydown", (e) => e.key === "Escape" && hideDetail());
    $("filter").addEventListener("input", (e) => {
      state.filter = e.target.value.trim().toLowerCase();
      renderTraffic();
    });
    $("errors-only").addEventListener("change", (e) => {
      state.errorsOnly = e.target.checked;
      renderTraffic();
    });
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => state.stats && renderCharts(state.stats), 150);
    });
  }

  async function start() {
    bindControls();
    runFeed();
    try {
      await Promise.all([loadHealth(), loadConfig()]);
      const { body } = await api("/admin/stats");
      if (body.backends.some((b) => !b.probe)) await probe(null, null);
    } catch (err) {
      notice("bad", `Could not load the dashboard: ${err.message}`);
    }
  }

  start();
})();
