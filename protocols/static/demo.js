// The end-user demo: a user's ranked feed (title, author, publication and reasons per story),
// a post's live comments and recommendations, and the user's notifications, over the WebSocket.
// Post fields come from posts.get: the feed's page in one JSON-RPC batch, then as needed.
"use strict";

(() => {
  const { el, rpc, rpcBatch } = Starling;
  let session = null;
  let user = null;
  let friends = new Set();
  let openPost = null;
  const posts = new Map(); // post id -> posts.get result, or null when there is no such post

  const connection = document.getElementById("connection");

  function bump(container) {
    container.dataset.count = String(Number(container.dataset.count) + 1);
  }

  // The fields of `ids` (null for a post that does not exist), asking posts.get only for
  // those not seen yet, in batches of at most 100 (the JSON-RPC batch limit).
  async function lookUp(ids) {
    const missing = [...new Set(ids)].filter((id) => !posts.has(id));
    for (let start = 0; start < missing.length; start += 100) {
      const chunk = missing.slice(start, start + 100);
      const replies = await rpcBatch("posts.get", chunk.map((post) => ({ post })));
      chunk.forEach((id, i) => posts.set(id, replies[i].result ?? null));
    }
    return ids.map((id) => posts.get(id));
  }

  const day = (epoch) => new Date(epoch * 1000)
    .toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
  const time = (epoch) => new Date(epoch * 1000).toLocaleTimeString();
  const person = (id) => `user ${id}`;

  function byline(fields) {
    return [
      `by ${person(fields.author)}`,
      fields.publication,
      fields.published_at ? day(fields.published_at) : null,
      fields.reading_time ? `${fields.reading_time} min read` : null,
    ].filter(Boolean).join(" · ");
  }

  function postLink(post, text, className = "") {
    const params = new URLSearchParams({ user: user ?? "", post });
    return el("a", {
      class: className,
      href: `?${params}`,
      "data-post": post,
      onclick: (event) => { event.preventDefault(); openPostView(post); },
    }, text);
  }

  // A link to `post` that reads "a post" until its title is known.
  function titleLink(post) {
    const link = postLink(post, "a post");
    lookUp([post])
      .then(([fields]) => { link.textContent = fields ? `“${fields.title}”` : "a post no longer there"; })
      .catch(() => {});
    return link;
  }

  function feedItem(item, fields, heldBack) {
    const score = el("div", { class: "score" }, `score ${item.score.toFixed(3)}`);
    if (heldBack) {
      score.append(el("span", { class: "held" },
        " · held back by diversification"));
    }
    return el("div", { class: "feed-item", "data-post": item.post },
      fields ? postLink(item.post, fields.title, "title") : el("span", { class: "title muted" }, "a post no longer there"),
      el("div", { class: "byline" }, fields ? byline(fields) : ""),
      el("div", { class: "reasons" }, item.reasons.join(" · ")),
      score);
  }

  // What a publication says, as nodes, and its kind (the entry's class).
  function describe(data) {
    const who = (data.author && data.author.name) || (data.user ? person(data.user) : "someone");
    switch (data.type) {
      case "comment":
        return [[`${who}: ${data.text ?? ""}`], "comment"];
      case "recommended":
        return [[friends.has(data.user)
          ? `a friend just recommended this (${who})`
          : `${who} recommended this`], "recommended"];
      case "notification":
        if (data.kind === "followed") return [[`${who} followed you`], "notification"];
        if (data.kind === "recommended") return [[`${who} recommended your post `, titleLink(data.post)], "notification"];
        if (data.kind === "published") return [[`${who} published `, titleLink(data.post)], "notification"];
        return [[JSON.stringify(data)], "notification"];
      default:
        return [[JSON.stringify(data)], "event"];
    }
  }

  function onPub(p) {
    if (p.channel.startsWith("post:") && p.channel !== `post:${openPost}`) return;
    const [parts, kind] = describe(p.data);
    const entry = el("div", { class: `event ${kind}`, "data-type": p.data.type || "" },
      ...parts, el("div", { class: "who" }, `#${p.offset}` + (p.data.at ? ` · ${time(p.data.at)}` : "")));
    const target = document.getElementById(p.channel.startsWith("user:") ? "notifications" : "live");
    if (target.id === "notifications") document.getElementById("no-notifications")?.remove();
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
    document.getElementById("feed-title").textContent = `Ranked feed of ${person(name)}`;
    try {
      const following = await rpc("social.following", { user: name, limit: 1000 });
      friends = new Set(following.users);
      const page = await rpc("feed.get", { user: name, limit: 20 });
      const fields = await lookUp(page.items.map((item) => item.post));
      // The ranker places each story as high as its author and publication allow, so one
      // scored above the story before it was held back (diversification).
      feed.replaceChildren(...page.items.map((item, i) =>
        feedItem(item, fields[i], i > 0 && item.score > page.items[i - 1].score)));
      feed.classList.remove("muted");
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
    view.classList.remove("muted");
    try {
      const fields = await rpc("posts.get", { post });
      posts.set(post, fields);
      const title = fields.url
        ? el("a", { class: "post-title", href: fields.url, target: "_blank", rel: "noopener" }, fields.title)
        : el("div", { class: "post-title" }, fields.title);
      const recommendations = `${fields.recommendations} recommendation${fields.recommendations === 1 ? "" : "s"}`;
      view.replaceChildren(title,
        el("div", { class: "byline" }, `${byline(fields)} · ${recommendations}`),
        el("div", { class: "tags" }, ...(fields.tags || []).map((tag) => el("span", { class: "tag" }, tag))));
    } catch (error) {
      view.textContent = `${error.message}; live events on it still show below.`;
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
    const post = prompt("post id (e.g. hn:12224879)");
    if (post) openPostView(post.trim());
  });
  const params = new URLSearchParams(location.search);
  if (params.get("user")) document.getElementById("user").value = params.get("user");
  showFeed(document.getElementById("user").value.trim()).then(() => {
    if (params.get("post")) openPostView(params.get("post"));
  });
  window.StarlingDemo = { openPost: openPostView, showFeed };
})();
