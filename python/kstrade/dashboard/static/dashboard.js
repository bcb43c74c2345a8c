// The kstrade dashboard page: plain JS over the JSON API (/api/*), redrawn when /api/events says
// which sections changed. `window.kstrade` holds what the page shows, for people and for tests.
"use strict";
(() => {
  const LC = window.LightweightCharts;
  const CANDLES = 1440; // a day of 1m candles per chart
  const ACCURACY_POINTS = 2000; // per model on the accuracy chart
  const ERRORS_KEPT = 50; // the page runs for months: its error list is bounded too
  const state = (window.kstrade = {
    ready: false, updates: 0, version: 0, live: false, errors: [],
    equityPoints: 0, positions: 0, orders: 0, decisions: 0, tiers: 0,
    candles: {}, markers: {}, topics: {}, deadLetters: {}, latencyRows: 0, controls: null,
    modelRows: 0, accuracyPoints: {}, driftRows: 0, movers: 0,
  });
  function failed(error) {
    state.errors.push(String(error));
    if (state.errors.length > ERRORS_KEPT) state.errors.splice(0, state.errors.length - ERRORS_KEPT);
  }
  const $ = (id) => document.getElementById(id);
  const num = (v, d = 2) => (v === null || v === undefined ? "" :
    Number(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }));
  const pct = (v) => (v === null || v === undefined ? "" : `${num(v, 2)}%`);
  const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 16) : "");
  const sign = (v) => (v > 0 ? "pos" : v < 0 ? "neg" : "");

  async function get(path) {
    const response = await fetch(path, { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(`${path}: ${body.error || response.status}`);
    return body;
  }

  // A table from rows of cells; a cell is text, or {text, cls} (text only: never HTML).
  function table(id, headers, rows, empty) {
    const el = $(id);
    el.replaceChildren();
    const head = el.createTHead().insertRow();
    for (const h of headers) {
      const th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    }
    const body = el.createTBody();
    if (!rows.length && empty) {
      const cell = body.insertRow().insertCell();
      cell.colSpan = headers.length;
      cell.textContent = empty;
      cell.className = "note";
    }
    for (const row of rows) {
      const tr = body.insertRow();
      for (const c of row) {
        const td = tr.insertCell();
        const cell = typeof c === "object" && c !== null ? c : { text: c };
        td.textContent = cell.text === undefined || cell.text === null ? "" : String(cell.text);
        if (cell.cls) td.className = cell.cls;
      }
    }
  }

  // -- charts -----------------------------------------------------------------------------------
  const theme = {
    autoSize: true,
    layout: { background: { color: "#161b22" }, textColor: "#c9d1d9", attributionLogo: true },
    grid: { vertLines: { color: "#21262d" }, horzLines: { color: "#21262d" } },
    rightPriceScale: { borderColor: "#30363d" },
    timeScale: { borderColor: "#30363d", timeVisible: true, secondsVisible: false },
  };
  const equity = LC.createChart($("equity-chart"), theme);
  const balance = equity.addSeries(LC.LineSeries, { color: "#58a6ff", lineWidth: 2, title: "balance" });
  const dailyFloor = equity.addSeries(LC.LineSeries, {
    color: "#d29922", lineWidth: 1, lineType: LC.LineType.WithSteps, lineStyle: LC.LineStyle.Dashed,
    title: "daily floor", lastValueVisible: true, priceLineVisible: false,
  });
  const maxFloor = equity.addSeries(LC.LineSeries, {
    color: "#f85149", lineWidth: 1, lineType: LC.LineType.WithSteps, lineStyle: LC.LineStyle.Dashed,
    title: "max-loss floor", lastValueVisible: true, priceLineVisible: false,
  });
  const symbolCharts = {};

  function symbolChart(symbol) {
    if (symbolCharts[symbol]) return symbolCharts[symbol];
    const box = document.createElement("div");
    const title = document.createElement("h3");
    title.textContent = symbol;
    const area = document.createElement("div");
    area.className = "chart";
    box.append(title, area);
    $("candle-charts").appendChild(box);
    const chart = LC.createChart(area, theme);
    const series = chart.addSeries(LC.CandlestickSeries, {
      upColor: "#3fb950", downColor: "#f85149", borderVisible: false, wickUpColor: "#3fb950", wickDownColor: "#f85149",
    });
    const markers = LC.createSeriesMarkers(series, []);
    symbolCharts[symbol] = { chart, series, markers, first: null, last: null, signals: [] };
    return symbolCharts[symbol];
  }

  // One value per time (the chart needs strictly ascending times): the last at each second.
  function perTime(points, key) {
    const out = [];
    for (const p of points) {
      const value = { time: p.time, value: p[key] };
      if (out.length && out[out.length - 1].time === p.time) out[out.length - 1] = value;
      else out.push(value);
    }
    return out;
  }

  // -- sections ---------------------------------------------------------------------------------
  let symbols = [];

  async function refreshAccount() {
    const a = await get("/api/account");
    const c = a.currency;
    const cards = [
      ["Balance", `${num(a.balance)} ${c}`, `initial ${num(a.initial_balance, 0)}`],
      ["Equity (est.)", num(a.equity_estimate), `floating ${num(a.floating_pnl)}`],
      ["Realised today", num(a.realized_pnl_today), `Prague day ${a.trading_day || "-"}`],
      ["Realised total", num(a.realized_pnl_total), `${a.trades_closed} trades, ${a.wins} won`],
      ["Drawdown", pct(a.drawdown_pct), `max ${pct(a.max_drawdown_pct)}`],
      ["Daily headroom", num(a.daily_headroom), `floor ${num(a.daily_floor)} (${pct(a.daily_headroom_pct)})`],
      ["Max-loss headroom", num(a.max_loss_headroom), `floor ${num(a.max_loss_floor)} (${pct(a.max_loss_headroom_pct)})`],
      ["Rules", a.rules.preset, `daily ${a.rules.max_daily_loss_pct}% / max ${a.rules.max_loss_pct}% ${a.rules.max_loss_mode}`],
    ];
    const box = $("account-cards");
    box.replaceChildren();
    for (const [label, value, sub] of cards) {
      const card = document.createElement("div");
      card.className = "card";
      const b = document.createElement("b");
      b.textContent = value;
      const l = document.createElement("span");
      l.textContent = `${label} · ${sub}`;
      card.append(b, l);
      box.appendChild(card);
    }
    balance.setData(perTime(a.curve, "balance"));
    dailyFloor.setData(perTime(a.curve, "daily_floor"));
    maxFloor.setData(perTime(a.curve, "max_loss_floor"));
    if (a.curve.length !== state.equityPoints) equity.timeScale().fitContent(); // the whole curve in view
    state.equityPoints = a.curve.length;
    state.balance = a.balance;
    $("asof").textContent = a.at ? `as of ${when(a.at)} UTC` : "no records yet";
  }

  async function refreshPositions() {
    const p = await get("/api/positions");
    state.positions = p.positions.length;
    table("positions", ["opened", "symbol", "side", "size", "entry", "stop", "target", "last", "P&L (est.)"],
      p.positions.map((x) => [when(x.opened_at), x.symbol, x.side, num(x.quantity, 4), num(x.entry_price),
        num(x.stop_loss), num(x.take_profit), num(x.last_price), { text: num(x.unrealized_pnl), cls: sign(x.unrealized_pnl) }]),
      "no open position");
  }

  async function refreshOrders() {
    const o = await get("/api/orders?limit=50");
    state.orders = o.total;
    table("orders", ["time", "symbol", "side", "qty", "price", "stop", "target", "status", "ms"],
      o.orders.map((x) => [when(x.at), x.symbol, x.side, num(x.quantity, 4), num(x.price), num(x.stop_loss),
        num(x.take_profit), { text: x.status, cls: x.status === "REJECTED" ? "neg" : "" }, num(x.latency_ms, 1)]),
      "no order yet");
  }

  function marker(s) {
    const long = s.direction === "LONG";
    return {
      time: s.time, position: long ? "belowBar" : "aboveBar", shape: long ? "arrowUp" : "arrowDown",
      color: long ? "#3fb950" : "#f85149", text: s.tier || "",
    };
  }

  function drawMarkers(symbol) {
    const c = symbolCharts[symbol];
    if (!c) return;
    const shown = c.first === null ? [] : c.signals.filter((s) => s.time >= c.first && s.time <= c.last);
    c.markers.setMarkers(shown.map(marker));
    state.markers[symbol] = shown.length;
  }

  async function refreshSignals() {
    const all = await get("/api/signals?limit=40");
    const rows = [
      ...all.final.map((s) => ({ ...s, outcome: "FINAL" })),
      ...all.rejected.map((s) => ({ ...s, outcome: s.reason })),
    ].sort((a, b) => b.time - a.time || a.symbol.localeCompare(b.symbol)).slice(0, 40);
    state.decisions = all.final_total + all.rejected_total;
    table("decisions", ["time", "symbol", "direction", "conf.", "tier", "decision"],
      rows.map((s) => [when(s.at), s.symbol, { text: s.direction, cls: s.direction === "LONG" ? "pos" : "neg" },
        num(s.confidence, 3), s.tier || "", { text: s.outcome, cls: s.outcome === "FINAL" ? "pos" : "" }]),
      "no decision yet");
    const counts = Object.entries(all.rejection_counts).map(([k, v]) => `${k} ${v}`).join(", ");
    $("rejection-counts").textContent = `${all.final_total} final, ${all.rejected_total} rejected` +
      (counts ? ` (${counts})` : "");
    await Promise.all(symbols.map(async (symbol) => {
      const s = await get(`/api/signals?symbol=${encodeURIComponent(symbol)}&limit=500`);
      symbolChart(symbol).signals = s.final;
      drawMarkers(symbol);
    }));
  }

  async function refreshCandles() {
    await Promise.all(symbols.map(async (symbol) => {
      const c = symbolChart(symbol);
      const data = (await get(`/api/candles?symbol=${encodeURIComponent(symbol)}&limit=${CANDLES}`)).candles;
      if (!data.length) return;
      const fresh = c.last === null ? [] : data.filter((d) => d.time >= c.last);
      if (c.last !== null && fresh.length && fresh.length < data.length && data[0].time === c.first) {
        for (const d of fresh) c.series.update(d); // the usual case: a few new minutes
      } else if (c.last === null || data[data.length - 1].time !== c.last || data[0].time !== c.first) {
        c.series.setData(data);
      }
      c.first = data[0].time;
      c.last = data[data.length - 1].time;
      state.candles[symbol] = data.length;
      drawMarkers(symbol);
    }));
  }

  // The accuracy chart: a line per model, the naive baselines dashed, 0.5 as a guide.
  const accuracy = LC.createChart($("accuracy-chart"), theme);
  const accuracyLines = {};
  const LINE_COLORS = { lstm: "#58a6ff", transformer: "#bc8cff", ensemble: "#3fb950",
    last_direction: "#d29922", always_flat: "#8b949e" };
  function accuracyLine(name) {
    if (!accuracyLines[name]) {
      const baseline = name === "last_direction" || name === "always_flat";
      accuracyLines[name] = accuracy.addSeries(LC.LineSeries, {
        color: LINE_COLORS[name] || "#c9d1d9", lineWidth: baseline ? 1 : 2, title: name.replace("_", " "),
        lineStyle: baseline ? LC.LineStyle.Dashed : LC.LineStyle.Solid, priceLineVisible: false,
        priceFormat: { type: "percent" },
      });
    }
    return accuracyLines[name];
  }
  let accuracySymbol = null;

  async function refreshAccuracy() {
    const symbol = $("accuracy-symbol").value;
    if (!symbol) return;
    const h = await get(`/api/models/accuracy?symbol=${encodeURIComponent(symbol)}&limit=${ACCURACY_POINTS}`);
    const seen = new Set();
    for (const s of [...h.models, ...h.baselines]) {
      accuracyLine(s.name).setData(s.points.map((p) => ({ time: p.time, value: 100 * p.value })));
      state.accuracyPoints[s.name] = s.points.length;
      seen.add(s.name);
    }
    for (const [name, line] of Object.entries(accuracyLines)) {
      if (!seen.has(name)) { line.setData([]); state.accuracyPoints[name] = 0; }
    }
    if (symbol !== accuracySymbol) accuracy.timeScale().fitContent();
    accuracySymbol = symbol;
  }

  async function refreshModels() {
    const m = await get("/api/models");
    state.tiers = m.tiers.length;
    table("tiers", ["tier", "signals", "mean conf.", "closed", "won", "hit rate", "95% interval"],
      m.tiers.map((t) => [t.tier, t.signals, num(t.mean_confidence, 3), t.closed, t.wins,
        t.hit_rate === null ? "" : pct(100 * t.hit_rate),
        t.hit_rate === null ? "" : `${pct(100 * t.hit_rate_low)} - ${pct(100 * t.hit_rate_high)}`]),
      "no final signal yet");
    const share = (v) => (v === null ? "" : pct(100 * v));
    state.modelRows = m.health.length;
    table("model-health", ["model", "symbol", "accuracy", "last-direction", "always-flat", "vs baseline",
      "error drift (Page-Hinkley)", "at"],
    m.health.map((h) => {
      const edge = h.accuracy === null || h.last_direction === null ? null
        : 100 * (h.accuracy - Math.max(h.last_direction, h.always_flat));
      return [h.model_type, h.symbol, share(h.accuracy), share(h.last_direction), share(h.always_flat),
        { text: edge === null ? "" : `${edge > 0 ? "+" : ""}${num(edge, 1)} pts`, cls: sign(edge) },
        { text: h.page_hinkley === null ? "" : `${num(h.page_hinkley, 1)} / ${num(h.page_hinkley_threshold, 0)}` +
          (h.error_drift ? " DRIFT" : ""), cls: h.error_drift ? "warn" : "" }, when(h.at)];
    }), "no accuracy summary yet (the metrics collector publishes one per emit interval)");
    state.driftRows = m.drift.length;
    state.movers = m.movers.length;
    const driftRow = (d) => [d.symbol, d.feature, { text: num(d.psi, 3), cls: d.significant ? "warn" : "" },
      d.change === null ? "" : { text: `${d.change > 0 ? "+" : ""}${num(d.change, 3)}`, cls: d.change > 0 ? "warn" : "" },
      d.ks === null ? "" : `${num(d.ks, 3)} (${num(d.ks_critical, 3)})`];
    const driftHead = ["symbol", "feature", "PSI", "change", "KS (1% critical)"];
    table("drift", driftHead, m.drift.slice(0, 25).map(driftRow),
      "no PSI published (the collector needs metrics.drift_reference: a model's drift_reference.json)");
    table("movers", driftHead, m.movers.map(driftRow), "no second summary yet");
    const versions = m.versions.map((v) => `${v.model_type} ${v.version}`).join(", ");
    $("model-note").textContent = `${m.features_watched} features watched, ${m.drifted_features} with PSI >= 0.2; ` +
      `accuracy over the last ${m.accuracy_window} predictions; baselines from the 1m candles read over the same ` +
      `minutes` + (versions ? `; model versions: ${versions}` : "");
    const select = $("accuracy-symbol");
    const symbolsSeen = [...new Set(m.health.map((h) => h.symbol))];
    const wanted = symbols.filter((s) => symbolsSeen.includes(s)).concat(symbolsSeen.filter((s) => !symbols.includes(s)));
    if ([...select.options].map((o) => o.value).join() !== wanted.join()) {
      const keep = select.value;
      select.replaceChildren(...wanted.map((s) => new Option(s, s)));
      if (wanted.includes(keep)) select.value = keep;
    }
    await refreshAccuracy();
  }
  $("accuracy-symbol").addEventListener("change", () => refreshAccuracy().catch(failed));

  async function refreshPipeline() {
    const p = await get("/api/pipeline");
    state.topics = p.topics;
    state.deadLetters = p.dead_letters;
    state.latencyRows = p.latency.length;
    const d = p.dashboard;
    $("reader").textContent = `read ${d.records_read.toLocaleString("en-US")} records in group ${d.group}` +
      (d.behind === null ? "" : `, ${d.behind.toLocaleString("en-US")} behind`) +
      (Object.keys(d.unreadable).length ? `, unreadable: ${JSON.stringify(d.unreadable)}` : "") +
      (d.error ? ` - ${d.error}` : "");
    table("topics", ["topic", "messages"],
      Object.entries(p.topics).map(([t, n]) => [t, { text: n.toLocaleString("en-US"), cls: "num" }]), "no message yet");
    table("latency", ["stage", "topic", "count", "p50 ms", "p99 ms", "max ms"],
      p.latency.map((l) => [l.stage, l.topic, l.count, num(l.p50_ms), num(l.p99_ms), num(l.max_ms)]),
      "no metrics.latency record yet");
    const dead = Object.entries(p.dead_letters);
    table("dead-letters", ["topic", "messages", "latest error"],
      dead.map(([t, n]) => {
        const last = p.recent_dead_letters.find((r) => r.topic === t);
        return [t, { text: n, cls: "num neg" }, last ? `${last.code}: ${last.message}` : ""];
      }), "no dead letter");
    table("alerts", ["time", "severity", "code", "message"],
      p.alerts.slice(0, 25).map((a) => [when(a.at), { text: a.severity, cls: a.severity === "INFO" ? "" : "warn" },
        a.code, a.message]), "no alert");
  }

  async function refreshControl() {
    const c = await get("/api/control");
    state.controls = c.enabled;
    for (const id of ["halt", "resume", "flatten"]) {
      $(id).disabled = !c.enabled;
      $(id).title = c.enabled ? `${id} account ${c.account}` : c.reason;
    }
    if (!c.enabled) $("control-note").textContent = c.reason;
    table("commands", ["time", "action", "account", "by", "reason", "acknowledged"],
      c.commands.map((x) => [when(x.at), x.action, x.account, x.issued_by, x.reason,
        { text: x.acknowledged ? x.acknowledgement : "waiting", cls: x.acknowledged ? "pos" : "warn" }]),
      "no operator command seen");
  }

  async function send(action) {
    const note = $("control-note");
    const reason = $("reason").value.trim();
    if (!reason) { note.textContent = "say why in the reason field first"; return; }
    if (action === "flatten" && !window.confirm("Close every open position at market, then halt?")) return;
    const response = await fetch(`/api/control/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${$("token").value}` },
      body: JSON.stringify({ reason, confirm: action === "flatten" }),
    });
    const body = await response.json().catch(() => ({}));
    note.textContent = response.ok ? `${action} sent (command ${body.command_id}); waiting for the acknowledgement`
      : `${action} refused: ${body.error || response.status}`;
  }
  for (const id of ["halt", "resume", "flatten"]) $(id).addEventListener("click", () => send(id).catch((e) => {
    $("control-note").textContent = String(e);
  }));

  const refreshers = {
    account: refreshAccount, positions: refreshPositions, orders: refreshOrders, signals: refreshSignals,
    candles: refreshCandles, models: refreshModels, pipeline: refreshPipeline, control: refreshControl,
  };

  // -- updates ----------------------------------------------------------------------------------
  const pending = new Set();
  let running = false;
  async function drain() {
    if (running) return;
    running = true;
    try {
      while (pending.size) {
        const sections = [...pending];
        pending.clear();
        const results = await Promise.allSettled(sections.map((s) => refreshers[s]()));
        for (const r of results) if (r.status === "rejected") failed(r.reason);
        state.updates += 1;
        state.ready = true;
      }
    } finally {
      running = false;
    }
  }

  async function start() {
    const meta = await get("/api/meta");
    symbols = meta.symbols;
    symbols.forEach(symbolChart);
    $("busline").textContent = `${meta.transport} bus · account ${meta.account} · kstrade ${meta.version}`;
    const events = new EventSource("/api/events");
    events.addEventListener("update", (e) => {
      const data = JSON.parse(e.data);
      state.version = data.version;
      for (const s of data.sections) if (refreshers[s]) pending.add(s);
      drain();
    });
    events.onopen = () => { state.live = true; $("live").className = "live on"; $("live").textContent = "live"; };
    events.onerror = () => {
      state.live = false;
      $("live").className = "live off";
      $("live").textContent = "reconnecting";
      for (const s of Object.keys(refreshers)) pending.add(s); // whatever was missed meanwhile
    };
  }
  start().catch((e) => { failed(e); $("live").textContent = `error: ${e}`; });
})();
