// The run pages: /runs/ lists the finished run directories, /runs/NAME shows one (GET /api/runs,
// /api/runs/NAME: report.html's figures as data). `window.kstradeRun` holds what the page shows.
"use strict";
(() => {
  const LC = window.LightweightCharts;
  const state = (window.kstradeRun = {
    ready: false, errors: [], runs: 0, equityPoints: 0, returns: 0, headroomPoints: 0, trades: 0, shownTrades: 0,
  });
  const $ = (id) => document.getElementById(id);
  const num = (v, d = 2) => (v === null || v === undefined ? "n/a" :
    Number(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }));
  const share = (v, d = 2) => (v === null || v === undefined ? "n/a" : `${num(100 * v, d)}%`);
  // As report.html: a figure beyond a million (a planted edge's CAGR) in three significant digits.
  const big = (v, shown) => (v !== null && v !== undefined && Math.abs(v) >= 1e6 ? Number(v).toPrecision(3) : shown(v));
  const when = (iso) => (iso ? String(iso).replace("T", " ").slice(0, 16) : "");
  const at = (seconds) => (seconds === null ? "" : new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16));
  const sign = (v) => (v > 0 ? "pos" : v < 0 ? "neg" : "");

  async function get(path) {
    const response = await fetch(path, { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `${path}: ${response.status}`);
    return body;
  }

  // A table from rows of cells; a cell is text, {text, cls} or {text, href} (text only: never HTML).
  function table(id, headers, rows, empty) {
    const el = $(id);
    el.replaceChildren();
    if (headers) {
      const head = el.createTHead().insertRow();
      for (const h of headers) {
        const th = document.createElement("th");
        th.textContent = h;
        head.appendChild(th);
      }
    }
    const body = el.createTBody();
    if (!rows.length && empty) {
      const cell = body.insertRow().insertCell();
      cell.colSpan = headers ? headers.length : 2;
      cell.textContent = empty;
      cell.className = "note";
    }
    for (const row of rows) {
      const tr = body.insertRow();
      for (const c of row) {
        const td = tr.insertCell();
        const cell = typeof c === "object" && c !== null ? c : { text: c };
        const text = cell.text === undefined || cell.text === null ? "" : String(cell.text);
        if (cell.href) {
          const a = document.createElement("a");
          a.href = cell.href;
          a.textContent = text;
          td.appendChild(a);
        } else {
          td.textContent = text;
        }
        if (cell.cls) td.className = cell.cls;
      }
    }
  }

  const theme = {
    autoSize: true,
    layout: { background: { color: "#161b22" }, textColor: "#c9d1d9", attributionLogo: true },
    grid: { vertLines: { color: "#21262d" }, horzLines: { color: "#21262d" } },
    rightPriceScale: { borderColor: "#30363d" },
    timeScale: { borderColor: "#30363d", timeVisible: true, secondsVisible: false },
  };

  // One value per time (the charts need strictly ascending times): the last at each second.
  function perTime(points, key, scale = 1) {
    const out = [];
    for (const p of points) {
      const value = { time: p.time, value: scale * p[key] };
      if (out.length && out[out.length - 1].time === p.time) out[out.length - 1] = value;
      else out.push(value);
    }
    return out;
  }

  async function listing() {
    $("listing").hidden = false;
    const r = await get("/api/runs");
    $("root").textContent = `run directories in ${r.root}`;
    state.runs = r.runs.length;
    table("runs", ["run", "written", "data", "symbols", "period", "trades", "final balance", "return", "max DD"],
      r.runs.map((x) => [{ text: x.name, href: `/runs/${encodeURIComponent(x.name)}` }, when(x.written),
        x.error || x.data, x.symbols.join(", "), x.start ? `${when(x.start)} - ${when(x.end)}` : "",
        x.trades_closed ?? "", num(x.final_balance), { text: share(x.total_return), cls: sign(x.total_return) },
        share(x.max_drawdown)]),
      `no run directory (with a summary.json) in ${r.root}: python -m kstrade run writes one`);
  }

  function cards(s, f) {
    const items = [
      ["Final balance", num(s.final_balance), f ? `initial ${num(f.initial_balance, 0)}` : ""],
      ["Total return", f ? share(f.total_return) : "n/a", f ? `CAGR ${big(f.cagr, share)}` : ""],
      ["Trades closed", String(s.trades_closed), `${s.wins} won${s.trades_closed ? ` (${share(s.wins / s.trades_closed, 1)})` : ""}`],
      ["Max drawdown", share(s.max_drawdown), f ? `longest ${num(f.max_drawdown_days)} days` : ""],
      ["Sharpe / Sortino", f ? `${num(f.sharpe)} / ${num(f.sortino)}` : "n/a", "daily, x sqrt 365"],
      ["Profit factor", f ? num(f.profit_factor) : "n/a", f ? `expectancy ${num(f.expectancy)}` : ""],
      ["Exposure", f ? share(f.exposure, 1) : "n/a", f ? `${num(f.trades_per_day, 1)} trades a day` : ""],
    ];
    const box = $("cards");
    box.replaceChildren();
    for (const [label, value, sub] of items) {
      const card = document.createElement("div");
      card.className = "card";
      const b = document.createElement("b");
      b.textContent = value;
      const l = document.createElement("span");
      l.textContent = `${label} · ${sub}`;
      card.append(b, l);
      box.appendChild(card);
    }
  }

  function drawTrades(trades) {
    const symbol = $("trade-symbol").value;
    const shown = trades.filter((t) => !symbol || t.symbol === symbol).reverse();
    state.shownTrades = shown.length;
    table("trades", ["entry", "exit", "symbol", "side", "size", "entry price", "exit price", "stop", "target",
      "P&L", "why", "tier", "conf.", "balance"],
    shown.map((t) => [at(t.entry_time), t.exit_time === null ? "open" : at(t.exit_time), t.symbol, t.side,
      num(t.quantity, 4), num(t.entry_price), num(t.exit_price), num(t.stop_loss), num(t.take_profit),
      { text: num(t.realized_pnl), cls: sign(t.realized_pnl) }, t.exit_reason || "", t.tier || "",
      num(t.confidence, 3), num(t.balance)]), "no trade");
  }

  async function run(name) {
    $("run").hidden = false;
    const r = await get(`/api/runs/${encodeURIComponent(name)}`);
    const s = r.summary;
    const f = s.statistics;
    document.title = `kstrade run ${r.name}`;
    $("title").textContent = `${r.name} · ${s.data || ""}`;
    if (r.report) {
      const a = document.createElement("a");
      a.href = `/runs/${encodeURIComponent(r.name)}/report.html`;
      a.textContent = "report.html";
      $("links").appendChild(a);
    }
    const data = String(s.data || "");
    $("warning").textContent = /synthetic/i.test(data) || data.includes("planted_edge")
      ? "The input is SYNTHETIC data, not market data: these results say nothing about real markets." : "";
    cards(s, f);

    const equity = LC.createChart($("equity-chart"), theme);
    equity.addSeries(LC.LineSeries, { color: "#58a6ff", lineWidth: 2, title: "balance" })
      .setData(perTime(r.equity, "balance"));
    equity.timeScale().fitContent();
    state.equityPoints = r.equity.length;
    const drawdown = LC.createChart($("drawdown-chart"), theme);
    drawdown.addSeries(LC.AreaSeries, { lineColor: "#f85149", topColor: "rgba(248,81,73,0.05)",
      bottomColor: "rgba(248,81,73,0.4)", lineWidth: 1, invertFilledArea: true })
      .setData(perTime(r.equity, "drawdown_pct"));
    drawdown.timeScale().fitContent();
    const room = LC.createChart($("headroom-chart"), theme);
    room.addSeries(LC.LineSeries, { color: "#d29922", lineWidth: 2, title: "daily" })
      .setData(perTime(r.headroom, "daily_loss_pct"));
    room.addSeries(LC.LineSeries, { color: "#f85149", lineWidth: 1, title: "max loss" })
      .setData(perTime(r.headroom, "max_loss_pct"));
    room.timeScale().fitContent();
    state.headroomPoints = r.headroom.length;
    const returns = LC.createChart($("returns-chart"), { ...theme, timeScale: { ...theme.timeScale, timeVisible: false } });
    returns.addSeries(LC.HistogramSeries, { priceFormat: { type: "percent" } })
      .setData(r.daily_returns.map((d) => ({ time: d.time, value: d.value, color: d.value < 0 ? "#f85149" : "#3fb950" })));
    returns.timeScale().fitContent();
    state.returns = r.daily_returns.length;

    const rows = [];
    if (f) {
      rows.push(["total return", share(f.total_return)], ["CAGR", big(f.cagr, share)],
        ["Sharpe / Sortino (daily, x sqrt 365)", `${num(f.sharpe)} / ${num(f.sortino)}`], ["Calmar", big(f.calmar, (v) => num(v, 3))],
        ["max drawdown / longest", `${share(f.max_drawdown)} / ${num(f.max_drawdown_days)} days`],
        ["profit factor", num(f.profit_factor)], ["expectancy per trade", num(f.expectancy)],
        ["win rate", share(f.win_rate, 1)], ["exposure", share(f.exposure, 1)],
        ["trades per day", num(f.trades_per_day, 1)], ["open at the end", String(f.open_at_end)]);
    }
    table("statistics", null, rows, "summary.json has no statistics (a run from before they were written)");
    const facts = [["data", data], ["symbols", (s.symbols || []).join(", ")], ["period", `${when(s.start)} - ${when(s.end)}`],
      ["candles replayed", num(s.candles, 0)], ["final signals", num(s.signals_final, 0)],
      ["candidates rejected", Object.entries(s.signals_rejected || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "none"],
      ["orders / executions", `${s.orders} / ${s.executions}`], ["guardrail events", String(s.guardrail_events)],
      ["lowest daily headroom", s.headroom ? `${num(s.headroom.lowest_daily_loss_headroom_pct)}%` : "n/a"],
      ["wall time", `${num(s.wall_seconds, 1)} s`]];
    for (const [stage, st] of Object.entries(s.stages || {})) {
      if (st.processing && st.processing.p50_us !== undefined) {
        facts.push([`${stage}: p50 / p99 per record`, `${num(st.processing.p50_us, 0)} / ${num(st.processing.p99_us, 0)} us`]);
      }
    }
    table("facts", null, facts);
    table("run-tiers", ["tier", "signals", "mean conf.", "closed", "hit rate", "95% interval"],
      (s.tiers || []).map((t) => [t.tier, t.signals, num(t.mean_confidence, 3), t.closed, share(t.hit_rate, 1),
        t.hit_rate_interval ? `${share(t.hit_rate_interval[0], 1)} - ${share(t.hit_rate_interval[1], 1)}` : ""]),
      "no final signal");
    table("by-symbol", ["symbol", "trades", "P&L", "win rate", "profit factor"],
      Object.entries((f && f.by_symbol) || {}).map(([k, g]) => [k, g.trades,
        { text: num(g.realized_pnl), cls: sign(g.realized_pnl) }, share(g.win_rate, 1), num(g.profit_factor)]),
      "no closed trade");

    state.trades = r.trades.length;
    const select = $("trade-symbol");
    for (const symbol of [...new Set(r.trades.map((t) => t.symbol))].sort()) select.add(new Option(symbol, symbol));
    select.addEventListener("change", () => drawTrades(r.trades));
    drawTrades(r.trades);
  }

  const name = decodeURIComponent(location.pathname.replace(/^\/runs\/?/, "").replace(/\/$/, ""));
  (name ? run(name) : listing())
    .then(() => { state.ready = true; })
    .catch((e) => {
      state.errors.push(String(e));
      state.ready = true;
      $("title").textContent = `error: ${e.message || e}`;
    });
})();
