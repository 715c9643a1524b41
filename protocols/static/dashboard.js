// The operator dashboard: draws the snapshots published on system:dashboard and charts the
// points of system:dashboard.series (observability/dashboard.py). On connect it reads the
// series' history (the last minutes), subscribes to the series from where that history ends,
// then to the snapshots: the server sends a snapshot at once to a new viewer, and each
// snapshot carries the points not yet in the series. Points are merged by their time `at`.
"use strict";

(() => {
  const { el } = Starling;
  const CHANNEL = "system:dashboard";
  const SERIES = "system:dashboard.series";
  const WINDOW_SECONDS = 300; // the charts show the last five minutes
  const GAP_SECONDS = 5; // points further apart are not joined (a restart, a lost connection)
  const points = new Map(); // at (epoch s) -> point
  let snapshots = 0;

  const fmt = (value, digits = 0) =>
    value === undefined || value === null ? "—" : Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });

  function text(id, value) { document.getElementById(id).textContent = value; }

  // Axis ticks on round numbers: a step of 1, 2 or 5 × 10^k, 2 to 4 steps up to a top ≥ max.
  function niceScale(max, steps = 4) {
    const high = Math.max(max, 1); // an idle chart still spans 0 to 1
    const raw = high / steps;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw * (1 - 1e-9));
    const count = Math.ceil(high / step - 1e-9);
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    const ticks = Array.from({ length: count + 1 }, (_, i) => Number((i * step).toFixed(digits)));
    return { top: count * step, ticks, digits };
  }

  // A chart sized to its box in CSS pixels (sharp on any devicePixelRatio); the x axis is
  // time, the last WINDOW_SECONDS ending at the newest point.
  function drawChart(canvas, series, lines, unit) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = 44, right = 10, top = 18, bottom = 22;
    const plotWidth = width - left - right, plotHeight = height - top - bottom;
    const max = Math.max(0, ...lines.flatMap((line) => series.map((point) => point[line.key] || 0)));
    const scale = niceScale(max);
    canvas.dataset.ticks = scale.ticks.join(" ");
    const y = (value) => top + plotHeight * (1 - value / scale.top);
    const newest = series.length ? series[series.length - 1].at : Date.now() / 1000;
    const x = (at) => left + plotWidth * (1 - (newest - at) / WINDOW_SECONDS);
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#263040";
    ctx.fillStyle = "#8a96a3";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (const tick of scale.ticks) {
      ctx.beginPath(); ctx.moveTo(left, y(tick)); ctx.lineTo(width - right, y(tick)); ctx.stroke();
      ctx.fillText(tick.toLocaleString(undefined, { maximumFractionDigits: scale.digits }), left - 6, y(tick));
    }
    ctx.textBaseline = "top";
    for (let minutes = WINDOW_SECONDS / 60; minutes >= 0; minutes -= 1) {
      ctx.textAlign = minutes === 0 ? "right" : "center";
      ctx.fillText(minutes ? `−${minutes} min` : "now", x(newest - minutes * 60), height - bottom + 6);
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "top";
    ctx.fillText(unit, width - right, 2);
    ctx.lineWidth = 2;
    for (const line of lines) {
      ctx.strokeStyle = line.color;
      ctx.beginPath();
      series.forEach((point, i) => {
        const joined = i > 0 && point.at - series[i - 1].at <= GAP_SECONDS;
        if (joined) ctx.lineTo(x(point.at), y(point[line.key] || 0));
        else ctx.moveTo(x(point.at), y(point[line.key] || 0));
      });
      ctx.stroke();
    }
  }

  function draw() {
    const series = [...points.values()].sort((a, b) => a.at - b.at);
    drawChart(document.getElementById("latency-chart"), series,
      [{ key: "p50", color: "#58a6ff" }, { key: "p99", color: "#f85149" }], "ms");
    drawChart(document.getElementById("rate-chart"), series,
      [{ key: "events_in", color: "#3fb950" }, { key: "deliveries_out", color: "#d29922" }], "per s");
    document.body.dataset.points = String(series.length);
  }

  function addPoints(list) {
    if (!list || !list.length) return;
    for (const point of list) points.set(point.at, point);
    const newest = Math.max(...points.keys());
    for (const at of [...points.keys()]) if (at < newest - WINDOW_SECONDS) points.delete(at);
    draw();
  }

  // The root's ↻ restarts every child of the root in place, the listener among them: the
  // call is answered first, then this page's WebSocket closes 1012 and reconnects.
  async function restart(path, button) {
    if (path === "root" && !confirm("Restart the whole tree (every child of the root)?")) return;
    button.disabled = true;
    try {
      await Starling.rpc("system.restart", { path });
    } catch (error) {
      alert(error.message);
    } finally {
      button.disabled = false;
    }
  }

  function node(child, path) {
    const id = path ? `${path}/${child.id}` : child.id;
    const item = el("li", { "data-path": id, "data-state": child.state },
      el("span", { class: `badge ${child.state}` }, child.state),
      el("span", { class: "node-id" }, child.id),
      el("span", { class: "muted" },
        `${child.kind === "supervisor" ? (child.strategy || "supervisor") : child.kind || ""}` +
        ` · restarts ${child.restarts_total ?? 0}` +
        (child.mailbox_size ? ` · inbox ${child.mailbox_used}/${child.mailbox_size} (peak ${child.mailbox_peak})` : "")),
    );
    if (child.last_error) {
      item.append(el("span", { class: "node-error" }, `${child.last_error.type}: ${child.last_error.message}`));
    }
    const button = el("button", { class: "restart", title: `restart ${id}` }, "↻");
    button.addEventListener("click", () => restart(id, button));
    item.append(button);
    if (child.children && child.children.length) {
      const list = el("ul");
      for (const grandchild of child.children) list.append(node(grandchild, id === "root" ? "" : id));
      if (child.more) list.append(el("li", { class: "muted" }, `… and ${child.more} more`));
      item.append(list);
    }
    return item;
  }

  function mailboxes(tree) {
    const rows = [];
    const walk = (child, path) => {
      const id = path ? `${path}/${child.id}` : child.id;
      if (child.mailbox_size) rows.push([id, child.mailbox_used, child.mailbox_peak, child.mailbox_size]);
      for (const grandchild of child.children || []) walk(grandchild, id === "root" ? "" : id);
    };
    walk(tree, "");
    rows.sort((a, b) => b[1] - a[1] || b[2] - a[2] || a[0].localeCompare(b[0]));
    return rows.slice(0, 25);
  }

  const number = (value) => el("td", { class: "num" }, value);

  function render(snapshot) {
    snapshots += 1;
    document.body.dataset.snapshots = String(snapshots);
    if (snapshots === 1) document.body.dataset.firstSnapshotMs = String(Math.round(performance.now()));
    const status = document.getElementById("status");
    status.textContent = snapshot.status;
    status.className = `badge ${snapshot.status}`;
    text("uptime", `up ${fmt(snapshot.uptime_seconds)} s`);
    for (const [name, value] of Object.entries(snapshot.rates || {})) text(`rate-${name}`, fmt(value, 1));
    text("ws-open", snapshot.ws ? `${fmt(snapshot.ws.open)} (peak ${fmt(snapshot.ws.peak_open)})` : "—");
    text("feeds-live", snapshot.feeds ? `${fmt(snapshot.feeds.live)} · ${fmt(snapshot.feeds.builds)} builds` : "—");
    const latency = snapshot.latency_ms || {};
    text("latency", `${fmt(latency.p50)} / ${fmt(latency.p99)} / ${fmt(latency["p99.9"])} ms`);
    const rt = snapshot.realtime || {};
    text("trouble", `${fmt(rt.poison)} / ${fmt(rt.slow_disconnects)}`);
    text("gaps", `${fmt(rt.gaps)} (${fmt(rt.missed)}) / ${fmt(rt.relay_dropped)}`);

    const kinds = Object.entries(snapshot.subscriptions || {}).sort((a, b) => b[1] - a[1]);
    document.querySelector("#subscriptions tbody").replaceChildren(...kinds.map(([kind, n]) =>
      el("tr", {}, el("td", {}, `${kind}:`), number(fmt(n)))));
    document.querySelector("#pushes tbody").replaceChildren(
      ...Object.entries(snapshot.pushes || {}).map(([kind, rate]) =>
        el("tr", {}, el("td", {}, kind), number(fmt(rate, 1)))));
    text("presence-sets", snapshot.presence ? fmt(snapshot.presence.sets) : "—");

    const tree = document.getElementById("tree");
    tree.replaceChildren(node(snapshot.tree, null));

    const mailboxBody = document.querySelector("#mailboxes tbody");
    mailboxBody.replaceChildren(...mailboxes(snapshot.tree).map(([actor, ...figures]) =>
      el("tr", {}, el("td", {}, actor), ...figures.map((cell) => number(fmt(cell))))));
    const rpcBody = document.querySelector("#rpc tbody");
    rpcBody.replaceChildren(...(snapshot.rpc || []).map((row) =>
      el("tr", {}, el("td", {}, row.method), number(fmt(row.calls_per_second, 1)),
        number(row.mean_ms === null ? "—" : fmt(row.mean_ms, 2)),
        number(fmt(row.calls)), number(fmt(row.errors)))));
  }

  const connection = document.getElementById("connection");
  const session = Starling.connect("/dashboard/token", {
    onPub: (p) => {
      if (p.channel === SERIES) addPoints(p.data.points);
      if (p.channel === CHANNEL) { addPoints(p.data.points); render(p.data); }
    },
    onState: (state, code) => {
      connection.textContent = state === "open" ? "live" : `disconnected (${code})`;
      connection.className = `badge ${state === "open" ? "running" : "failed"}`;
    },
  });
  session.ready
    .then(async () => {
      const history = await session.history(SERIES, 100);
      addPoints(history.publications.flatMap((publication) => publication.data.points));
      document.body.dataset.backfilled = String(points.size);
      await session.subscribe(SERIES, { offset: history.offset, epoch: history.epoch });
      await session.subscribe(CHANNEL);
      document.body.dataset.subscribedMs = String(Math.round(performance.now()));
    })
    .catch((error) => {
      connection.textContent = `error: ${error.message}`;
      connection.className = "badge failed";
    });
  window.addEventListener("resize", draw);
  draw();
  window.StarlingDashboard = { series: () => [...points.values()].sort((a, b) => a.at - b.at) };
})();
