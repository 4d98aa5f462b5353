// rtgate status page: polls /ui/data.json and re-renders the tables the server rendered.
// Values are set with textContent only (never parsed as HTML).
"use strict";

const POLL_MS = 2000;

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function seconds(v) { return typeof v === "number" ? v.toFixed(1) + " s" : ""; }
function millis(v) { return typeof v === "number" ? Math.round(v * 1000) + " ms" : ""; }

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
}

function countRows(counts) {
  const names = Object.keys(counts);
  if (names.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell("none");
    td.colSpan = 2;
    tr.append(td);
    return [tr];
  }
  return names.map((name) => {
    const tr = document.createElement("tr");
    tr.append(cell(name), cell(counts[name]));
    return tr;
  });
}

function poolRow(d) {
  const tr = document.createElement("tr");
  tr.dataset.deployment = d.deployment;
  tr.dataset.state = d.state;
  const cooldown = d.cooldown_remaining || 0;
  tr.append(
    cell(d.model_name), cell(d.deployment), cell(d.provider),
    cell(d.state, "state state-" + d.state), cell(d.weight), cell(d.active_sessions),
    cell(d.ejections), cell(cooldown ? seconds(cooldown) : ""), cell(d.last_error),
    cell(millis(d.handshake_latency_ewma)),
  );
  return tr;
}

function closeRow(c) {
  const tr = document.createElement("tr");
  const ended = new Date(c.ended_at * 1000).toLocaleTimeString([], { hour12: false });
  const bad = c.closed_by !== "client" && c.code !== 1000 && c.code !== 1001;
  tr.append(
    cell(ended), cell(c.model_group), cell(c.deployment), cell(c.key_alias),
    cell(c.code, bad ? "code bad" : "code"), cell(c.closed_by), cell(c.reason), cell(seconds(c.seconds)),
  );
  return tr;
}

// Dollars as the server renders them (ui.py usd): cents, or six decimals below one cent.
function usd(v) {
  if (v === 0) return "$0.00";
  return v < 0.01 ? "$" + v.toFixed(6) : "$" + v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function spendRows(keys) {
  if (keys.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell("no spend today");
    td.colSpan = 5;
    tr.append(td);
    return [tr];
  }
  return keys.map((k) => {
    const tr = document.createElement("tr");
    tr.dataset.key = k.key_alias;
    tr.append(
      cell(k.key_alias || "(no key)"), cell(usd(k.spend_usd), "num"), cell(k.input_tokens, "num"),
      cell(k.output_tokens, "num"), cell(k.responses, "num"),
    );
    return tr;
  });
}

function spendNote(today) {
  const day = new Date(today.since * 1000).toISOString().slice(0, 10);
  let note = "since 00:00 UTC (" + day + "), all workers and hosts sharing the spend database";
  if (!today.from_database) {
    note += " (database unreachable: its last answer and this process's unwritten records)";
  }
  return note;
}

async function refresh() {
  const status = document.getElementById("updated");
  try {
    const response = await fetch("/ui/data.json", { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) { window.location.assign("/ui"); return; }
    const data = await response.json();
    fill("pool", data.pool.map(poolRow));
    fill("groups", countRows(data.sessions_by_group));
    fill("keys", countRows(data.sessions_by_key));
    fill("closes", data.recent_closes.map(closeRow));
    fill("spend", spendRows(data.spend_today.keys));
    document.getElementById("spend-note").textContent = spendNote(data.spend_today);
    document.getElementById("sessions-active").textContent = String(data.sessions_active);
    status.textContent = "updated " + new Date().toLocaleTimeString([], { hour12: false }) +
      (data.draining ? " (draining)" : "");
    document.body.dataset.polled = String(Number(document.body.dataset.polled || 0) + 1);
  } catch (err) {
    status.textContent = "cannot reach the gateway: " + err;
  }
}

refresh();
setInterval(refresh, POLL_MS);
