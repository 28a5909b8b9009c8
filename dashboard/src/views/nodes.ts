// Nodes (admin): capacity, allocation, heartbeat age, cordon/uncordon/drain.
//
// The stream sends nodes when their state, cordon, capacity or allocation change, not on
// every heartbeat: the age shown is the one when the nodes were last read (a node whose
// heartbeats stop turns NotReady, which the stream does send). Refresh reads them again.

import { api, call } from "../api/client";
import { age, button, byId, el, fill, mib, row } from "../dom";
import { attempt } from "../errors";
import { changed, on, state } from "../state";

/** When state.nodes was last read (seconds since the epoch). */
let readAt = 0;

export function nodesRead(): void {
  readAt = Date.now() / 1000;
}

function clock(unix: number): string {
  return new Date(unix * 1000).toISOString().slice(11, 19);
}

async function act(name: string, action: "cordon" | "uncordon" | "drain"): Promise<void> {
  if (action === "drain" && !window.confirm(`Drain ${name}? Its VMs are placed elsewhere.`)) return;
  const node = await call(
    `${action} ${name}`,
    api.POST("/v1/nodes/{name}/{action}", { params: { path: { name, action } } }),
  );
  state.nodes = state.nodes.map((n) => (n.name === node.name ? node : n));
  nodesRead();
  changed("nodes");
}

function render(): void {
  const body = byId("nodes-body");
  const rows = [...state.nodes]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((n) => {
      const actions = el("span", { class: "actions" });
      if (n.cordoned) actions.appendChild(button("Uncordon", "node-uncordon", () => void attempt(() => act(n.name, "uncordon"))));
      else actions.appendChild(button("Cordon", "node-cordon", () => void attempt(() => act(n.name, "cordon"))));
      actions.appendChild(button("Drain", "node-drain", () => void attempt(() => act(n.name, "drain"))));
      const hb = el(
        "span",
        { "data-testid": "node-heartbeat", title: n.last_heartbeat },
        `${age(readAt - n.last_heartbeat_unix)} (read at ${clock(readAt)} UTC)`,
      );
      const tr = row(
        "node-row",
        [
          n.name,
          el("span", { class: `state-${n.state}` }, n.state),
          n.cordoned ? "yes" : "no",
          `${n.driver}${n.hardware_virtualization ? " (KVM)" : " (TCG)"}`,
          n.kernel_release,
          `${n.capacity.vcpus} vCPU, ${mib(n.capacity.memory_mib)}`,
          `${n.allocated.vcpus} vCPU, ${mib(n.allocated.memory_mib)}`,
          hb,
        ],
        actions,
      );
      tr.dataset.node = n.name;
      return tr;
    });
  fill(body, ...rows);
}

export async function loadNodes(): Promise<void> {
  state.nodes = await call("list nodes", api.GET("/v1/nodes"));
  nodesRead();
  changed("nodes");
}

export function initNodes(): void {
  on("nodes", render);
  byId("nodes-refresh").addEventListener("click", () => void attempt(loadNodes));
}
