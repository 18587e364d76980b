// The unirec explorer: plain DOM code over the server's JSON routes (no framework, no build).
// Every value from the store is inserted as text (textContent), never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(err) {
  const box = $("#error");
  box.textContent = String(err.message || err);
  box.classList.remove("hidden");
}

function clearError() { $("#error").classList.add("hidden"); }

const fmt = (x, digits = 3) => (x === null || x === undefined || Number.isNaN(x))
  ? "" : Number(x).toFixed(digits);

function thumb(item) {
  return item.image
    ? el("img", { src: item.image, alt: item.title || `item ${item.item_id}` })
    : el("div", { class: "noimg", title: "no image" });
}

// ---- tabs -----------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => showView(tab.dataset.view));
}

function showView(name) {
  clearError();
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === name);
  }
  for (const view of document.querySelectorAll(".view")) {
    view.classList.toggle("hidden", view.id !== `view-${name}`);
  }
  if (name === "store") loadStore().catch(showError);
  if (name === "cold") loadForm().catch(showError);
}

// ---- users ----------------------------------------------------------------------------
let searchTimer = null;
$("#user-search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => loadUsers($("#user-search").value).catch(showError), 150);
});

async function loadUsers(query) {
  const body = await getJSON(`/explorer/users?q=${encodeURIComponent(query)}&limit=200`);
  $("#user-count").textContent = `${body.total} users${body.total > 200 ? " (first 200)" : ""}`;
  const list = $("#user-list");
  list.replaceChildren(...body.users.map((u) => el("li", {},
    el("button", { "data-user": u.user_id, onclick: () => loadUser(u.user_id) },
      `user ${u.user_id}`, el("span", { class: "muted" }, ` · ${u.interactions}`)))));
}

async function loadUser(userId) {
  clearError();
  for (const b of document.querySelectorAll("#user-list button")) {
    b.classList.toggle("active", b.dataset.user === String(userId));
  }
  const body = await getJSON(`/explorer/user?user=${encodeURIComponent(userId)}&k=10`);
  const chips = [];
  for (const [group, fields] of Object.entries(body.profile)) {
    if (group === "user_id") continue;
    for (const [field, value] of Object.entries(fields || {})) {
      const text = Array.isArray(value) ? value.join(", ") : value;
      if (text === null || text === "") continue;
      chips.push(el("span", { class: "chip" }, `${field}: ${text}`));
    }
  }
  const grid = el("div", { class: "grid", id: "recs" },
    body.items.map((item, i) => recCard(item, i, body.explanations)));
  $("#user-detail").replaceChildren(
    el("h2", { id: "user-title" }, `User ${body.user_id}`),
    el("div", { class: "profile", id: "profile" }, chips.length ? chips : "no features"),
    el("h2", {}, `History (${body.history.length} most recent, newest first)`),
    el("div", { class: "strip", id: "history" }, body.history.map((item) =>
      el("div", { class: "card history-item" }, thumb(item),
        el("div", { class: "title" }, item.title || `item ${item.item_id}`),
        el("div", { class: "meta" }, `item ${item.item_id}`)))),
    el("h2", {}, `Top ${body.items.length} recommendations`),
    grid,
    el("div", { id: "why" }),
    el("div", { id: "similar" }));
}

function recCard(item, i, canExplain) {
  const card = el("div", { class: "card rec", "data-item": item.item_id }, thumb(item),
    el("div", { class: "title" }, `${i + 1}. ${item.title || `item ${item.item_id}`}`),
    el("div", { class: "meta" }, `item ${item.item_id} · score ${fmt(item.score)}`));
  const actions = el("div", { class: "actions" });
  if (canExplain && item.explanation) {
    actions.append(el("button", { class: "why-button", onclick: () => toggleWhy(card, item) },
      "why?"));
  }
  actions.append(el("button", { class: "similar-button",
    onclick: () => loadSimilar(item.item_id).catch(showError) }, "similar"));
  card.append(actions);
  return card;
}

function bar(value, scale) {
  const width = Math.min(120, Math.round(Math.abs(value) / (scale || 1) * 120));
  return el("span", { class: value < 0 ? "bar neg" : "bar", style: `width:${width}px` });
}

function contributionTable(rows, columns) {
  const scale = Math.max(1e-9, ...rows.map((r) => Math.abs(r.contribution)));
  return el("table", {},
    el("tr", {}, columns.map((c) => el("th", {}, c[0])), el("th", {}, "contribution")),
    rows.map((r) => el("tr", {}, columns.map((c) => el("td", {}, c[1](r))),
      el("td", {}, bar(r.contribution, scale), ` ${fmt(r.contribution, 4)}`))));
}

function toggleWhy(card, item) {
  const box = $("#why");
  const same = box.dataset.item === String(item.item_id);
  for (const c of document.querySelectorAll("#recs .card")) c.classList.remove("selected");
  box.replaceChildren();
  delete box.dataset.item;
  if (same) return;
  card.classList.add("selected");
  box.dataset.item = item.item_id;
  const why = item.explanation;
  const top = (rows) => rows.slice(0, 5);
  box.append(el("div", { class: "why" },
    el("h2", {}, `Why item ${item.item_id} (${item.title || ""})?`),
    el("p", { class: "muted" },
      `score ${fmt(why.score, 4)} = baseline ${fmt(why.baseline, 4)} + every feature ` +
      `contribution (the largest 5 shown) + interaction ${fmt(why.interaction, 4)}. ` +
      "A contribution is the score minus the score without that input. " +
      "No ranking stage yet: these are the retrieval model's reasons."),
    el("div", { class: "why-columns" },
      el("div", {}, el("strong", {}, "History items that pull it up most"),
        why.history.length ? contributionTable(top(why.history), [
          ["item", (r) => `${r.item_id} ${r.title || ""}`],
          ["similarity", (r) => fmt(r.similarity)],
          ["attention", (r) => fmt(r.attention)]]) : el("p", { class: "muted" }, "no history")),
      el("div", {}, el("strong", {}, "User features that matter most"),
        contributionTable(top(why.user_features), [["feature", (r) => r.name],
          ["value", (r) => r.value]])),
      el("div", {}, el("strong", {}, "Item features that matter most"),
        contributionTable(top(why.item_features), [["feature", (r) => r.name],
          ["value", (r) => r.value]])))));
  box.scrollIntoView({ block: "nearest" });
}

async function loadSimilar(itemId) {
  const body = await getJSON(`/explorer/item?item=${encodeURIComponent(itemId)}&k=6`);
  $("#similar").replaceChildren(
    el("h2", {}, `Similar to item ${body.item_id} (${body.title || ""})`),
    el("div", { class: "strip" }, body.similar.map((item) =>
      el("div", { class: "card" }, thumb(item),
        el("div", { class: "title" }, item.title || `item ${item.item_id}`),
        el("div", { class: "meta" }, `item ${item.item_id} · ${fmt(item.score)}`)))));
  $("#similar").scrollIntoView({ block: "nearest" });
}

// ---- store ----------------------------------------------------------------------------
async function loadStore() {
  const body = await getJSON("/explorer/store");
  const metricNames = body.metrics.length
    ? Object.keys(body.metrics[0]).filter((k) => k === "epoch" || k === "train_loss" ||
      k.startsWith("val_")) : [];
  $("#view-store").replaceChildren(el("div", { class: "store" },
    el("div", {},
      el("h2", {}, `Tables in ${body.store}`),
      el("table", { id: "store-tables" }, el("tr", {}, el("th", {}, "table"), el("th", {}, "rows")),
        body.tables.map((t) => el("tr", {}, el("td", {}, t.table),
          el("td", {}, t.rows.toLocaleString("en-US"))))),
      el("h2", {}, "Features"),
      el("table", {}, body.features.map((f) => el("tr", {}, el("td", {}, f.side),
        el("td", {}, f.name), el("td", { class: "muted" }, f.op))))),
    el("div", {},
      el("h2", {}, "Training curves"),
      body.plot ? el("img", { src: "/explorer/metrics.png", alt: "training curves",
        id: "metrics-plot" }) : el("p", { class: "muted" }, "no metrics.png"),
      el("table", { id: "metrics-table" },
        el("tr", {}, metricNames.map((m) => el("th", {}, m))),
        body.metrics.map((row) => el("tr", {}, metricNames.map((m) =>
          el("td", {}, m === "epoch" ? row[m] : fmt(row[m], 4)))))))));
}

// ---- cold start -----------------------------------------------------------------------
let formLoaded = false;
async function loadForm() {
  if (formLoaded) return;
  const body = await getJSON("/explorer/form");
  const form = $("#cold-form");
  const inputs = body.fields.map((f) => {
    const name = `${f.group}.${f.field}`;
    const input = f.group === "categorical"
      ? el("select", { name }, el("option", { value: "" }, "(unknown)"),
        f.choices.map((c) => el("option", { value: c }, c)))
      : el("input", { name, type: "number", step: "any", value: f.default });
    return el("label", {}, f.field, input);
  });
  form.replaceChildren(...inputs,
    el("label", {}, "history (item ids, most recent last)",
      el("input", { name: "history", id: "cold-history", placeholder: "e.g. 3, 17, 42",
        size: 30 })),
    el("div", {}, el("button", { type: "submit", id: "cold-submit",
      disabled: body.cold_start ? null : "disabled" }, "Recommend")),
    body.cold_start ? null : el("p", { class: "muted" },
      "The server runs with --no-cold: new users need the towers."));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitCold(form).catch(showError);
  });
  formLoaded = true;
}

async function submitCold(form) {
  clearError();
  const user = {};
  for (const input of form.querySelectorAll("select, input")) {
    const value = input.value.trim();
    if (!value) continue;
    if (input.name === "history") {
      user.history = value.split(/[\s,]+/).filter(Boolean)
        .map((v) => (/^-?\d+$/.test(v) ? Number(v) : v));
      continue;
    }
    const [group, field] = input.name.split(/\.(.*)/s);
    user[group] = user[group] || {};
    user[group][field] = group === "continuous" ? Number(value) : value;
  }
  const body = await getJSON("/explorer/cold", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, k: 10 }),
  });
  $("#cold-results").replaceChildren(el("h2", {}, "Recommendations"),
    el("div", { class: "grid", id: "cold-recs" }, body.items.map((item, i) =>
      el("div", { class: "card rec" }, thumb(item),
        el("div", { class: "title" }, `${i + 1}. ${item.title || `item ${item.item_id}`}`),
        el("div", { class: "meta" }, `item ${item.item_id} · score ${fmt(item.score)}`)))));
}

loadUsers("").catch(showError);
