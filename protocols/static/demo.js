// The end-user demo: a user's ranked feed with reasons, and a post's live comments and
// recommendations over the WebSocket.
"use strict";

(() => {
  const { el, rpc } = Starling;
  let session = null;
  let user = null;
  let friends = new Set();
  let openPost = null;

  const connection = document.getElementById("connection");

  function bump(container) {
    container.dataset.count = String(Number(container.dataset.count) + 1);
  }

  function describe(data) {
    const who = data.author && data.author.name ? data.author.name : data.user;
    switch (data.type) {
      case "comment":
        return [`${who ?? "someone"}: ${data.text ?? ""}`, "comment"];
      case "recommended":
        return [friends.has(data.user)
          ? `a friend just recommended this (${data.user})`
          : `${data.user} recommended this`, "recommended"];
      case "notification":
        if (data.kind === "followed") return [`${data.user} followed you`, "notification"];
        if (data.kind === "recommended") return [`${data.user} recommended your post ${data.post}`, "notification"];
        if (data.kind === "published") return [`${data.user} published ${data.post}`, "notification"];
        return [JSON.stringify(data), "notification"];
      default:
        return [JSON.stringify(data), "event"];
    }
  }

  function onPub(p) {
    const [line, kind] = describe(p.data);
    const entry = el("div", { class: `event ${kind}`, "data-type": p.data.type || "" },
      line, el("div", { class: "who" }, `${p.channel} · #${p.offset}`));
    const target = p.channel.startsWith("user:")
      ? document.getElementById("notifications")
      : document.getElementById("live");
    if (p.channel.startsWith("post:") && p.channel !== `post:${openPost}`) return;
    target.prepend(entry);
    bump(target);
  }

  async function connectAs(name) {
    if (session) session.close();
    session = Starling.connect(`/demo/token?user=${encodeURIComponent(name)}`, {
      onPub,
      onState: (state, code) => {
        connection.textContent = state === "open" ? `live as ${name}` : `disconnected (${code})`;
        connection.className = `badge ${state === "open" ? "running" : "failed"}`;
      },
    });
    await session.ready;
    await session.subscribe(`user:${name}`);
  }

  async function showFeed(name) {
    user = name;
    const feed = document.getElementById("feed");
    feed.textContent = "ranking…";
    document.getElementById("feed-title").textContent = `Ranked feed of ${name}`;
    try {
      const following = await rpc("social.following", { user: name, limit: 1000 });
      friends = new Set(following.users);
      const page = await rpc("feed.get", { user: name, limit: 20 });
      feed.replaceChildren(...page.items.map((item) =>
        el("div", { class: "feed-item", "data-post": item.post },
          el("a", { onclick: () => openPostView(item.post) }, item.post),
          el("span", { class: "muted" }, ` · score ${item.score.toFixed(3)}`),
          el("div", { class: "reasons" }, item.reasons.join(" · ")))));
      if (!page.items.length) feed.textContent = "Nothing to rank for this user.";
      feed.dataset.items = String(page.items.length);
    } catch (error) {
      feed.textContent = error.message;
    }
    await connectAs(name);
  }

  async function openPostView(post) {
    if (openPost && session) await session.unsubscribe(`post:${openPost}`).catch(() => {});
    openPost = post;
    const live = document.getElementById("live");
    live.replaceChildren();
    live.dataset.count = "0";
    const view = document.getElementById("post");
    document.getElementById("post-title").textContent = `Post ${post}`;
    try {
      const fields = await rpc("posts.get", { post });
      view.replaceChildren(
        el("div", {}, el("strong", {}, fields.title || post)),
        el("div", { class: "muted" }, `by ${fields.author} · ${fields.recommendations} recommendations` +
          (fields.publication ? ` · ${fields.publication}` : "")));
    } catch (error) {
      view.textContent = `${post}: ${error.message} (live events still show below)`;
    }
    if (session) {
      const result = await session.subscribe(`post:${post}`);
      view.dataset.subscribed = String(result.offset);
    }
  }

  document.getElementById("pick").addEventListener("submit", (event) => {
    event.preventDefault();
    showFeed(document.getElementById("user").value.trim());
  });
  document.getElementById("open-any").addEventListener("click", (event) => {
    event.preventDefault();
    const post = prompt("post id (e.g. a Reddit thread id like 1ru8951)");
    if (post) openPostView(post.trim());
  });
  const params = new URLSearchParams(location.search);
  if (params.get("user")) document.getElementById("user").value = params.get("user");
  showFeed(document.getElementById("user").value.trim()).then(() => {
    if (params.get("post")) openPostView(params.get("post"));
  });
  window.StarlingDemo = { openPost: openPostView, showFeed };
})();
