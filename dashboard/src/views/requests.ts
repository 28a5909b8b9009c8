// Module requests of every visible VM (an admin: all tenants'), as the stream keeps them.

import { byId, el, fill, row, shortTime } from "../dom";
import { on, state } from "../state";

function render(): void {
  const rows: HTMLTableRowElement[] = [];
  for (const [vmId, reqs] of state.requests) {
    const vm = state.vms.get(vmId);
    for (const r of reqs) {
      const tr = row("module-request-row", [
        vm ? vm.spec.name : vmId,
        vm?.tenant,
        r.name,
        el("span", { class: `req req-${r.state}` }, r.state),
        r.want_loaded ? "load" : "unload",
        r.reason,
        shortTime(r.updated_at),
      ]);
      tr.dataset.module = r.name;
      tr.dataset.state = r.state;
      rows.push(tr);
    }
  }
  rows.sort((a, b) => (a.textContent ?? "").localeCompare(b.textContent ?? ""));
  fill(byId("requests-body"), ...rows);
}

export function initRequests(): void {
  on("requests", render);
  on("vms", render);
}
