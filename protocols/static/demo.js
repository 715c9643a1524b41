// The end-user demo: a user's ranked feed (title, author, publication and reasons per story),
// a post's live comments and recommendations and who is on it now (presence), the user's
// notifications, and what the people they follow do (following:<me>), over the WebSocket.
// Post fields come from posts.get: the feed's page in one JSON-RPC batch, then as needed.
"use strict";

(() => {
  const { el, rpc, rpcBatch } = Starling;
  let session = null;
  let user = null;
  let friends = new Set();
  let openPost = null;
  let followingChannel = null; // "following:<me>" while subscribed
  let presenceChannel = null; // "post:<openPost>" while subscribed with presence: true
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

  // feed.stale on user:<me> (coalesced by the server, one per 5 s at most): the ranked feed
  // has news; a banner counts them until clicked, which reloads the feed and hides it.
  const stale = document.getElementById("stale");
  function showStale(data) {
    const count = Number(stale.dataset.new) + data.new;
    stale.dataset.new = String(count);
    stale.textContent = `${count} new ${count === 1 ? "story" : "stories"} — refresh`;
    stale.hidden = false;
  }
  stale.addEventListener("click", async () => {
    stale.hidden = true;
    stale.dataset.new = "0";
    await rpc("feed.invalidate", { user }).catch(() => {}); // rank afresh, whatever the reason
    await loadFeed(user);
  });

  // following:<me>: each activity of the people the user follows, newest first, the last
  // FOLLOWING_KEPT kept (the server never sends the user's own).
  const FOLLOWING_KEPT = 50;
  const following = document.getElementById("following");
  function activity(data) {
    const who = (data.author && data.author.name) || (data.user ? person(data.user) : "someone");
    const post = !data.post ? "a post"
      : data.title ? postLink(data.post, `“${data.title}”`) : titleLink(data.post);
    switch (data.type) {
      case "published": return [`${who} published `, post];
      case "recommended": return [`${who} recommended `, post];
      case "comment": return [`${who} commented on `, post, el("div", { class: "quote" }, data.text ?? "")];
      default: return [`${who}: ${data.type ?? "activity"}`];
    }
  }
  function showActivity(p) {
    document.getElementById("no-following")?.remove();
    following.prepend(el("div", {
      class: `event ${p.data.type || ""}`, "data-type": p.data.type || "", "data-user": p.data.user || "",
    }, ...activity(p.data), el("div", { class: "who" }, `#${p.offset}` + (p.data.at ? ` · ${time(p.data.at)}` : ""))));
    while (following.querySelectorAll(".event").length > FOLLOWING_KEPT) following.lastElementChild.remove();
    bump(following);
  }
  function followingNote(text) {
    following.prepend(el("p", { class: "muted note" }, text));
  }

  // Online now: who is on the open post. The `presence` reply after subscribing with
  // presence: true (it counts every join/leave queued before it), then the join/leave pushes.
  // Hidden when the server has no presence for the channel (an error reply).
  const presence = document.getElementById("presence");
  const online = document.getElementById("online");
  const present = new Map(); // user -> connections on presenceChannel
  let presenceTotal = 0; // users present, also those beyond the reply's list

  function renderPresence() {
    const users = [...present.keys()].sort((a, b) => (a === user ? -1 : b === user ? 1 : a.localeCompare(b)));
    online.replaceChildren(...users.map((who) => el("li", {
      "data-user": who, "data-connections": String(present.get(who)),
    }, who === user ? `${person(who)} (you)` : person(who))));
    document.getElementById("online-total").textContent = `(${presenceTotal})`;
    presence.dataset.users = String(presenceTotal);
  }
  function hidePresence() {
    presenceChannel = null;
    present.clear();
    presenceTotal = 0;
    presence.hidden = true;
    delete presence.dataset.users;
  }
  async function loadPresence(channel) {
    try {
      const reply = await session.presence(channel);
      if (channel !== presenceChannel) return;
      present.clear();
      for (const entry of reply.users) present.set(entry.user, entry.connections);
      presenceTotal = reply.total;
      renderPresence();
      presence.hidden = false;
    } catch {
      if (channel === presenceChannel) hidePresence();
    }
  }
  function onPresence(method, { channel, user: who, connections }) {
    if (channel !== presenceChannel) return;
    if (method === "join") {
      if (!present.has(who)) presenceTotal += 1;
      present.set(who, connections);
    } else if (present.delete(who) || presenceTotal > present.size) {
      presenceTotal -= 1;
    }
    renderPresence();
  }

  // A notice over the page, e.g. the server ended a subscription; a click dismisses it.
  function notice(text, channel) {
    const line = el("p", { class: "notice", "data-channel": channel, title: "dismiss" }, text);
    line.addEventListener("click", () => line.remove());
    document.getElementById("notices").append(line);
  }
  function label(channel) {
    if (channel === followingChannel) return "the people you follow";
    const post = channel.startsWith("post:") ? posts.get(channel.slice(5)) : null;
    return post ? `“${post.title}”` : channel;
  }

  // The server's pushes other than `pub`. `unsubscribed`: the server ended a subscription
  // (an unfollow, a block); starling.js has dropped it already (it is not resubscribed).
  function onPush(method, params) {
    if (method === "join" || method === "leave") return onPresence(method, params);
    if (method === "gap") {
      return notice(`Live updates ${params.first}–${params.last} of ${label(params.channel)} were lost on the way.`,
        params.channel);
    }
    if (method !== "unsubscribed") return;
    const { channel, reason } = params;
    notice(`No more live updates from ${label(channel)}: ${reason || "ended by the server"}.`, channel);
    if (channel === presenceChannel) hidePresence();
    if (channel === `post:${openPost}`) document.getElementById("post").dataset.unsubscribed = reason || "";
    if (channel === followingChannel) {
      followingChannel = null;
      following.dataset.unsubscribed = reason || "";
      followingNote(`Ended by the server (${reason || "no reason given"}).`);
    }
  }

  // A resubscription after a reconnect: presence is read afresh (the joins and leaves while
  // away are lost); the following column says when what it missed could not be recovered.
  function onSubscribed(channel, result) {
    if (channel === presenceChannel) loadPresence(channel);
    if (channel === followingChannel && result.recovered === false) {
      followingNote("Reconnected: some activity while you were away is not shown.");
    }
  }

  function onPub(p) {
    if (p.data.type === "feed.stale") return showStale(p.data);
    if (p.channel.startsWith("following:")) return p.channel === followingChannel ? showActivity(p) : undefined;
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
    followingChannel = null;
    hidePresence();
    following.replaceChildren(el("p", { class: "muted", id: "no-following" },
      `What the people ${person(name)} follows publish, recommend and comment, as it happens.`));
    following.dataset.count = "0";
    delete following.dataset.subscribed;
    delete following.dataset.unsubscribed;
    session = Starling.connect(`/demo/token?user=${encodeURIComponent(name)}`, {
      onPub,
      onPush,
      onSubscribed,
      onState: (state, code) => {
        connection.textContent = state === "open" ? `live as ${name}` : `disconnected (${code})`;
        connection.className = `badge ${state === "open" ? "running" : "failed"}`;
      },
    });
    await session.ready;
    await session.subscribe(`user:${name}`);
    try {
      const result = await session.subscribe(`following:${name}`);
      followingChannel = `following:${name}`;
      following.dataset.subscribed = String(result.offset);
    } catch (error) {
      followingNote(`Not live: ${error.message}.`);
    }
    if (openPost) await watchPost(openPost); // the post stays open for the new user
  }

  async function showFeed(name) {
    user = name;
    stale.hidden = true;
    stale.dataset.new = "0";
    await loadFeed(name);
    await connectAs(name);
  }

  async function loadFeed(name) {
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
  }

  async function openPostView(post) {
    if (openPost && session) await session.unsubscribe(`post:${openPost}`).catch(() => {});
    openPost = post;
    hidePresence();
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
    if (session) await watchPost(post);
  }

  // Subscribe to post:<post>, counted in its presence; without presence where the server
  // refuses it (then no "Online now"). A post closed meanwhile is unsubscribed again.
  async function watchPost(post) {
    const channel = `post:${post}`;
    const view = document.getElementById("post");
    hidePresence();
    delete view.dataset.unsubscribed;
    let result;
    let counted = true;
    try {
      try {
        result = await session.subscribe(channel, undefined, { presence: true });
      } catch (error) {
        if (!error.rpc || ![-32602, -32001].includes(error.rpc.code)) throw error;
        counted = false;
        result = await session.subscribe(channel);
      }
    } catch (error) {
      document.getElementById("live").prepend(el("p", { class: "muted" }, `Not live: ${error.message}.`));
      return;
    }
    if (post !== openPost) {
      await session.unsubscribe(channel).catch(() => {});
      return;
    }
    view.dataset.subscribed = String(result.offset);
    if (counted) {
      presenceChannel = channel;
      await loadPresence(channel);
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
