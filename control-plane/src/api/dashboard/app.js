// The modvisor dashboard: a thin client of the REST API. Every value from the server is
// inserted as text (never as HTML).
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("modvisor-token") || "";

function claims(t) {
  try {
    const p = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(p));
  } catch (_) {
    return null;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error(json && json.detail ? `${r.status}: ${json.detail}` : `HTTP ${r.status}`);
  return json;
}

function row(cells, extra) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c && typeof c === "object" && "text" in c) {
      td.textContent = c.text;
      if (c.cls) td.className = c.cls;
    } else {
      td.textContent = c === null || c === undefined ? "-" : String(c);
    }
    tr.appendChild(td);
  }
  if (extra) {
    const td = document.createElement("td");
    td.appendChild(extra);
    tr.appendChild(td);
  }
  return tr;
}

function fill(table, rows) {
  const body = $(table + " tbody");
  body.replaceChildren(...rows);
}

function showError(e) {
  $("#error").textContent = e ? String(e.message || e) : "";
}

async function refresh() {
  const c = claims(token);
  $("#who").textContent = c ? `${c.role}${c.tenant ? " " + c.tenant : ""} (sub ${c.sub})` : "not signed in";
  if (!c) return;
  try {
    const vms = await api("GET", "/v1/vms?limit=1000");
    const rows = [];
    for (const vm of vms.items) {
      const reqs = await api("GET", `/v1/vms/${encodeURIComponent(vm.id)}/modules`);
      const mods = reqs.map((r) => `${r.name}:${r.state}`).join(", ");
      const del = document.createElement("button");
      del.textContent = "Delete";
      del.onclick = () => api("DELETE", `/v1/vms/${encodeURIComponent(vm.id)}`).then(refresh, showError);
      rows.push(row([vm.spec.name, { text: vm.id, cls: "mono" }, vm.tenant, vm.spec.vcpus, vm.spec.memory_mib,
        { text: vm.status.phase, cls: "phase-" + vm.status.phase }, vm.status.node, vm.status.reason, mods], del));
    }
    fill("#vms", rows);
    const cat = await api("GET", "/v1/modules");
    fill("#modules", cat.map((m) => row([m.name, m.versions.map((v) => v.kernel_release).join(", "),
      { text: m.versions.map((v) => v.sha256.slice(0, 16)).join(", "), cls: "mono" }])));
    const ev = await api("GET", "/v1/events?limit=1000");
    fill("#events", ev.items.slice(-50).reverse().map((e) =>
      row([e.seq, e.time, e.actor, e.action, { text: e.resource, cls: "mono" }, e.outcome, e.detail])));
    showError(null);
  } catch (e) {
    showError(e);
  }
}

$("#token").value = token;
$("#use-token").onclick = () => {
  token = $("#token").value.trim();
  sessionStorage.setItem("modvisor-token", token);
  refresh();
};
$("#forget-token").onclick = () => {
  token = "";
  sessionStorage.removeItem("modvisor-token");
  $("#token").value = "";
  refresh();
};
$("#create-vm").onsubmit = (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  api("POST", "/v1/vms", { name: f.get("name"), vcpus: Number(f.get("vcpus")), memory_mib: Number(f.get("memory_mib")) })
    .then(refresh, showError);
};
refresh();
setInterval(refresh, 5000);
