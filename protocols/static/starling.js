// Starling's browser client: JSON-RPC over HTTP (/rpc) and over the WebSocket (/ws).
// Shared by the dashboard and the demo page; no build step, no dependencies.
"use strict";

const Starling = (() => {
  // An API key given as #key=… in the page URL is sent as a bearer key.
  const key = new URLSearchParams(location.hash.slice(1)).get("key");
  const headers = () => (key ? { Authorization: `Bearer ${key}` } : {});
  let nextId = 1;

  async function getJson(path) {
    const response = await fetch(path, { headers: headers() });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function rpc(method, params) {
    const response = await fetch("/rpc", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers() },
      body: JSON.stringify({ jsonrpc: "2.0", id: nextId++, method, params }),
    });
    const reply = await response.json();
    if (reply.error) {
      const error = new Error(`${method}: ${reply.error.message} (${reply.error.code})`);
      error.rpc = reply.error;
      throw error;
    }
    return reply.result;
  }

  // One JSON-RPC batch over /rpc: `method` once per params object, answered in one round trip.
  // Returns one {result} or {error} per params, in order (a batch holds at most 100).
  async function rpcBatch(method, paramsList) {
    if (!paramsList.length) return [];
    const requests = paramsList.map((params) => ({ jsonrpc: "2.0", id: nextId++, method, params }));
    const response = await fetch("/rpc", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers() },
      body: JSON.stringify(requests),
    });
    const replies = await response.json();
    if (!Array.isArray(replies)) {
      const error = replies.error || { message: `HTTP ${response.status}` };
      throw Object.assign(new Error(`${method}: ${error.message}`), { rpc: error });
    }
    const byId = new Map(replies.map((reply) => [reply.id, reply]));
    return requests.map((request) => {
      const reply = byId.get(request.id);
      if (!reply) return { error: { message: "no reply" } };
      return reply.error ? { error: reply.error } : { result: reply.result };
    });
  }

  // A WebSocket session: request() answers by id; onPub(params) gets each publication.
  // onPush(method, params), if given, gets the server's other pushes: `gap`, `unsubscribed`
  // (the subscription is dropped here first: never resubscribed), `join` and `leave`.
  // Reconnects after a close and resubscribes with `since` (recovery), and with `presence`
  // where it was asked; onSubscribed(channel, result), if given, hears of each resubscription
  // (a refused one is reported to onPush as `unsubscribed` with the error's reason).
  function connect(tokenPath, { onPub, onState, onPush = () => {}, onSubscribed = () => {} }) {
    const pending = new Map();
    const channels = new Map(); // channel -> {offset, epoch, presence}
    let socket = null;
    let closedByUs = false;

    function send(method, params) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        socket.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
      });
    }

    function handle(message) {
      if (message.method === "pub") {
        const p = message.params;
        const position = channels.get(p.channel);
        if (position) position.offset = p.offset;
        onPub(p);
        return;
      }
      if (message.method) {
        if (message.method === "unsubscribed") channels.delete(message.params.channel);
        onPush(message.method, message.params);
        return;
      }
      const waiter = pending.get(message.id);
      if (!waiter) return;
      pending.delete(message.id);
      if (message.error) waiter.reject(Object.assign(new Error(message.error.message), { rpc: message.error }));
      else waiter.resolve(message.result);
    }

    async function open() {
      const { token } = await getJson(tokenPath);
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
      socket.onmessage = (event) => {
        const data = JSON.parse(event.data);
        for (const message of Array.isArray(data) ? data : [data]) handle(message);
      };
      socket.onclose = (event) => {
        for (const waiter of pending.values()) waiter.reject(new Error("connection closed"));
        pending.clear();
        onState("closed", event.code);
        if (!closedByUs) setTimeout(() => open().catch(() => onState("closed", 0)), 1000);
      };
      await new Promise((resolve, reject) => {
        socket.onopen = resolve;
        socket.onerror = reject;
      });
      onState("open");
      for (const [channel, position] of channels) {
        const since = position.epoch ? { offset: position.offset, epoch: position.epoch } : undefined;
        let result;
        try {
          result = await send("subscribe", subscribeParams(channel, since, position.presence));
        } catch (error) {
          if (!error.rpc) throw error; // the connection dropped again: the next open() retries
          channels.delete(channel);
          onPush("unsubscribed", { channel, reason: error.rpc.data?.reason || error.message });
          continue;
        }
        position.epoch = result.epoch;
        for (const publication of result.publications || []) onPub({ channel, ...publication });
        position.offset = Math.max(position.offset, result.offset);
        onSubscribed(channel, result);
      }
    }

    function subscribeParams(channel, since, presence) {
      return { channel, ...(since ? { since } : {}), ...(presence ? { presence: true } : {}) };
    }

    const session = {
      ready: null,
      // `since` ({offset, epoch}, e.g. from a `history` reply): the publications after it
      // come first, through onPub, then the live ones; none lost, none twice. `presence`:
      // count this connection among the channel's users and get its `join`/`leave` pushes.
      async subscribe(channel, since, { presence = false } = {}) {
        const result = await send("subscribe", subscribeParams(channel, since, presence));
        channels.set(channel, { offset: result.offset, epoch: result.epoch, presence });
        for (const publication of result.publications || []) onPub({ channel, ...publication });
        return result;
      },
      async unsubscribe(channel) {
        channels.delete(channel);
        return send("unsubscribe", { channel });
      },
      history(channel, limit) { return send("history", { channel, limit }); },
      // {users: [{user, connections}], total}: who is on `channel` now.
      presence(channel) { return send("presence", { channel }); },
      close() { closedByUs = true; if (socket) socket.close(1000); },
    };
    session.ready = open();
    setInterval(() => { if (socket && socket.readyState === 1) send("ping", {}).catch(() => {}); }, 20000);
    return session;
  }

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  return { rpc, rpcBatch, getJson, connect, el };
})();
