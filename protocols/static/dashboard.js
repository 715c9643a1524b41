// The operator dashboard: draws the snapshots published on system:dashboard.
"use strict";

(() => {
  const { el } = Starling;
  const CHANNEL = "system:dashboard";
  const POINTS = 120;
  const series = []; // {at, p50, p99, in, out}
  let snapshots = 0;

  const fmt = (value, digits = 0) =>
    value === undefined || value === null ? "—" : Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });

  function text(id, value) { document.getElementById(id).textContent = value; }

  function drawChart(canvas, lines, unit) {
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    ctx.clearRect(0, 0, width, height);
    const values = lines.flatMap((line) => series.map((point) => point[line.key] || 0));
    const top = Math.max(1, ...values) * 1.15;
    ctx.strokeStyle = "#263040";
    ctx.fillStyle = "#8a96a3";
    ctx.font = "11px system-ui";
    for (let i = 0; i <= 4; i++) {
      const y = height - 18 - ((height - 28) * i) / 4;
      ctx.beginPath(); ctx.moveTo(40, y); ctx.lineTo(width, y); ctx.stroke();
      ctx.fillText(fmt((top * i) / 4, top < 10 ? 1 : 0), 2, y + 4);
    }
    ctx.fillText(unit, width - 60, 12);
    const x = (i) => 40 + ((width - 44) * i) / Math.max(1, POINTS - 1);
    const y = (v) => height - 18 - ((height - 28) * v) / top;
    for (const line of lines) {
      ctx.strokeStyle = line.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      series.forEach((point, i) => {
        const px = x(POINTS - series.length + i);
        const py = y(point[line.key] || 0);
        if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
      });
      ctx.stroke();
    }
  }

  async function restart(path, button) {
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
    if (path !== null) {
      const button = el("button", { class: "restart", title: `restart ${id}` }, "↻");
      button.addEventListener("click", () => restart(id, button));
      item.append(button);
    }
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

  function render(snapshot) {
    snapshots += 1;
    document.body.dataset.snapshots = String(snapshots);
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

    const tree = document.getElementById("tree");
    tree.replaceChildren(node(snapshot.tree, null));

    const mailboxBody = document.querySelector("#mailboxes tbody");
    mailboxBody.replaceChildren(...mailboxes(snapshot.tree).map((row) =>
      el("tr", {}, ...row.map((cell) => el("td", {}, String(cell))))));
    const rpcBody = document.querySelector("#rpc tbody");
    rpcBody.replaceChildren(...(snapshot.rpc || []).map((row) =>
      el("tr", {}, el("td", {}, row.method), el("td", {}, fmt(row.calls_per_second, 1)),
        el("td", {}, row.mean_ms === null ? "—" : fmt(row.mean_ms, 2)),
        el("td", {}, fmt(row.calls)), el("td", {}, fmt(row.errors)))));
  }

  function add(snapshot) {
    series.push({
      at: snapshot.at,
      p50: (snapshot.latency_ms || {}).p50 || 0,
      p99: (snapshot.latency_ms || {}).p99 || 0,
      in: (snapshot.rates || {}).events_in || 0,
      out: (snapshot.rates || {}).deliveries_out || 0,
    });
    while (series.length > POINTS) series.shift();
    drawChart(document.getElementById("latency-chart"),
      [{ key: "p50", color: "#58a6ff" }, { key: "p99", color: "#f85149" }], "ms");
    drawChart(document.getElementById("rate-chart"),
      [{ key: "in", color: "#3fb950" }, { key: "out", color: "#d29922" }], "per s");
    document.body.dataset.points = String(series.length);
  }

  const connection = document.getElementById("connection");
  const session = Starling.connect("/dashboard/token", {
    onPub: (p) => { if (p.channel === CHANNEL) { add(p.data); render(p.data); } },
    onState: (state, code) => {
      connection.textContent = state === "open" ? "live" : `disconnected (${code})`;
      connection.className = `badge ${state === "open" ? "running" : "failed"}`;
    },
  });
  session.ready
    .then(async () => {
      const history = await session.history(CHANNEL, 100);
      for (const publication of history.publications) add(publication.data);
      await session.subscribe(CHANNEL);
    })
    .catch((error) => {
      connection.textContent = `error: ${error.message}`;
      connection.className = "badge failed";
    });
})();
