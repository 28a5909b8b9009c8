// VMs: an admin sees every tenant's (filter by tenant, phase, node); a tenant its own, and
// creates them (with modules), powers them, deletes them, requests and unloads modules,
// and sees the guest's modules and the reasons of phases and requests.

import { api, call, type ModuleRequest, type Vm } from "../api/client";
import { button, byId, el, fill, mib, option, row, setOptions, shortTime } from "../dom";
import { attempt } from "../errors";
import { changed, dropVm, on, putVm, setRequests, state } from "../state";
import { tenantsMayHaveChanged } from "./tenants";

const PHASES = ["Pending", "Scheduled", "Starting", "Running", "Stopping", "Stopped", "Failed", "Lost"];

let selected: string | null = null;

function sortedVms(): Vm[] {
  return [...state.vms.values()].sort(
    (a, b) => a.tenant.localeCompare(b.tenant) || a.spec.name.localeCompare(b.spec.name),
  );
}

function requestsText(id: string): string {
  const reqs = state.requests.get(id) ?? [];
  return reqs.map((r) => `${r.name}: ${r.state}${r.want_loaded ? "" : " (unload)"}`).join(", ");
}

function renderFilters(): void {
  const vms = [...state.vms.values()];
  const tenants = new Set([...state.tenants.map((t) => t.name), ...vms.map((v) => v.tenant)]);
  const nodes = new Set([...state.nodes.map((n) => n.name), ...vms.flatMap((v) => (v.status.node ? [v.status.node] : []))]);
  const opts = (xs: Iterable<string>): [string, string][] => [["", "any"], ...[...xs].sort().map((x): [string, string] => [x, x])];
  setOptions(byId<HTMLSelectElement>("vm-filter-tenant"), opts(tenants));
  setOptions(byId<HTMLSelectElement>("vm-filter-phase"), opts(PHASES));
  setOptions(byId<HTMLSelectElement>("vm-filter-node"), opts(nodes));
}

function shown(vm: Vm): boolean {
  const t = byId<HTMLSelectElement>("vm-filter-tenant").value;
  const p = byId<HTMLSelectElement>("vm-filter-phase").value;
  const n = byId<HTMLSelectElement>("vm-filter-node").value;
  return (!t || vm.tenant === t) && (!p || vm.status.phase === p) && (!n || vm.status.node === n);
}

function power(vm: Vm): string {
  return vm.spec.power_state ?? "running";
}

function render(): void {
  renderFilters();
  const rows = sortedVms()
    .filter(shown)
    .map((vm) => {
      const actions = el("span", { class: "actions" });
      actions.appendChild(button("Details", "vm-details", () => select(vm.id)));
      if (!state.isAdmin && !vm.deleting) {
        const running = power(vm) === "running";
        actions.appendChild(
          button(running ? "Stop" : "Start", "vm-power", () => void attempt(() => setPower(vm.id, running ? "stopped" : "running"))),
        );
        actions.appendChild(button("Delete", "vm-delete", () => void attempt(() => remove(vm.id)), "danger"));
      }
      const tr = row(
        "vm-row",
        [
          vm.spec.name,
          vm.tenant,
          el("span", { class: `phase phase-${vm.status.phase}`, "data-testid": "vm-phase" }, vm.deleting ? `${vm.status.phase} (deleting)` : vm.status.phase),
          vm.status.node,
          vm.spec.vcpus,
          mib(vm.spec.memory_mib),
          power(vm),
          el("span", { "data-testid": "vm-requests" }, requestsText(vm.id) || "-"),
          vm.status.reason,
        ],
        actions,
      );
      tr.dataset.vm = vm.spec.name;
      tr.dataset.vmId = vm.id;
      if (vm.id === selected) tr.classList.add("selected");
      return tr;
    });
  fill(byId("vms-body"), ...rows);
  renderDetail();
}

function list(items: string[] | undefined): string {
  return items && items.length ? items.join(", ") : "-";
}

function requestRow(vmId: string, r: ModuleRequest): HTMLTableRowElement {
  const unloadButton =
    !state.isAdmin && r.want_loaded
      ? button("Unload", "request-unload", () => void attempt(() => unload(vmId, r.name)))
      : el("span");
  const tr = row(
    "request-row",
    [r.name, el("span", { class: `req req-${r.state}`, "data-testid": "request-state" }, r.state), r.want_loaded ? "load" : "unload", r.reason, shortTime(r.updated_at)],
    unloadButton,
  );
  tr.dataset.module = r.name;
  tr.dataset.state = r.state;
  return tr;
}

/** The detail panel: its informative part is re-rendered; the request form is kept. */
function renderDetail(): void {
  const panel = byId("vm-detail");
  const vm = selected ? state.vms.get(selected) : undefined;
  if (!vm) {
    panel.hidden = true;
    delete panel.dataset.vmId;
    fill(panel);
    return;
  }
  panel.hidden = false;
  let info = panel.querySelector<HTMLElement>(".info");
  let form = panel.querySelector<HTMLFormElement>("form");
  if (!info || !form || panel.dataset.vmId !== vm.id) {
    panel.dataset.vmId = vm.id;
    info = el("div", { class: "info" });
    form = requestForm(vm.id);
    fill(panel, info, form);
  }
  const s = vm.status;
  const dl = el("dl");
  const item = (k: string, v: string | number | null | undefined) =>
    dl.append(el("dt", {}, k), el("dd", { "data-testid": `vm-detail-${k.replace(/ /g, "-")}` }, v === null || v === undefined || v === "" ? "-" : String(v)));
  item("id", vm.id);
  item("tenant", vm.tenant);
  item("phase", s.phase);
  item("reason", s.reason);
  item("node", s.node);
  item("network", s.network ? `${s.network.network} ${s.network.ip}/${s.network.prefix}` : vm.spec.network ?? "default");
  item("kernel mode", s.kernel_mode && s.kernel_mode !== vm.spec.kernel_mode ? `${vm.spec.kernel_mode} (booted: ${s.kernel_mode})` : vm.spec.kernel_mode);
  item("guest modules", list(s.guest_modules));
  item("module taints", Object.entries(s.module_taints ?? {}).map(([m, t]) => `${m} (${t})`).join(", "));
  item("platform modules", list(s.platform_modules));
  item("interfaces", (s.interfaces ?? []).map((i) => `${i.name} ${i.addresses.join(" ")}`.trim()).join(", "));
  item("user data", s.user_data ? `${s.user_data.state}${s.user_data.exit_code == null ? "" : ` (exit ${s.user_data.exit_code})`}` : null);
  item("created", shortTime(vm.created_at));
  item("generation", vm.generation);
  const reqs = state.requests.get(vm.id) ?? [];
  const table = el(
    "table",
    { "data-testid": "requests-of-vm" },
    el("thead", {}, el("tr", {}, ...["module", "state", "wanted", "reason", "updated", ""].map((h) => el("th", {}, h)))),
  );
  const tbody = el("tbody");
  tbody.append(...reqs.map((r) => requestRow(vm.id, r)));
  table.appendChild(tbody);
  fill(
    info,
    el("h3", {}, `VM ${vm.spec.name}`, " ", button("Close", "vm-detail-close", () => select(null), "small")),
    dl,
    el("h4", {}, "Module requests"),
    table,
  );
  form.hidden = state.isAdmin || !!vm.deleting;
  const sel = form.querySelector("select");
  if (sel) setOptions(sel, requestable().map((m): [string, string] => [m, m]));
}

/** Modules the caller may ask for: a tenant's catalog lists only those approved for it. */
function requestable(): string[] {
  return state.modules
    .filter((m) => state.isAdmin || !m.policy || m.policy.approved)
    .map((m) => m.name)
    .sort();
}

function requestForm(vmId: string): HTMLFormElement {
  const sel = el("select", { "data-testid": "request-module-name" });
  const form = el("form", { class: "inline", "data-testid": "request-module" }, el("label", {}, "module ", sel), el("button", { type: "submit", "data-testid": "request-module-submit" }, "Request module"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void attempt(() => requestModule(vmId, sel.value));
  });
  return form;
}

function select(id: string | null): void {
  selected = id;
  if (id) void attempt(() => loadRequests(id));
  changed("vms");
}

async function loadRequests(id: string): Promise<void> {
  const items = await call("list module requests", api.GET("/v1/vms/{id}/modules", { params: { path: { id } } }));
  if (state.vms.has(id)) setRequests(id, items);
}

async function requestModule(id: string, name: string): Promise<void> {
  if (!name) throw new Error("request a module: choose one");
  await call(`request ${name}`, api.POST("/v1/vms/{id}/modules", { params: { path: { id } }, body: { name } }));
  await loadRequests(id);
}

async function unload(id: string, name: string): Promise<void> {
  await call(`unload ${name}`, api.DELETE("/v1/vms/{id}/modules/{name}", { params: { path: { id, name } } }));
  await loadRequests(id);
}

async function setPower(id: string, to: "running" | "stopped"): Promise<void> {
  const vm = await call("read the VM", api.GET("/v1/vms/{id}", { params: { path: { id } } }));
  const spec = { ...vm.spec, power_state: to };
  const updated = await call(
    `power ${to === "running" ? "on" : "off"} ${vm.spec.name}`,
    api.PUT("/v1/vms/{id}", { params: { path: { id }, header: { "If-Match": `"${vm.generation}"` } }, body: spec }),
  );
  putVm(updated);
}

async function remove(id: string): Promise<void> {
  const vm = state.vms.get(id);
  if (!window.confirm(`Delete VM ${vm?.spec.name ?? id}?`)) return;
  const r = await api.DELETE("/v1/vms/{id}", { params: { path: { id } } });
  tenantsMayHaveChanged();
  if (r.response.status === 204) {
    dropVm(id);
    return;
  }
  const updated = await call(`delete ${vm?.spec.name ?? id}`, Promise.resolve(r));
  if (updated) putVm(updated);
}

async function create(): Promise<void> {
  const name = byId<HTMLInputElement>("vm-name").value.trim();
  const mods = [...byId<HTMLSelectElement>("vm-modules").selectedOptions].map((o) => ({ name: o.value }));
  const body = {
    name,
    vcpus: Number(byId<HTMLInputElement>("vm-vcpus").value),
    memory_mib: Number(byId<HTMLInputElement>("vm-memory").value),
    power_state: byId<HTMLSelectElement>("vm-power").value as "running" | "stopped",
    modules: mods,
    kernel_mode: byId<HTMLSelectElement>("vm-kernel-mode").value as "standard" | "operator-modules",
  };
  const vm = await call(`create VM ${name}`, api.POST("/v1/vms", { body }));
  putVm(vm);
  tenantsMayHaveChanged();
  byId<HTMLInputElement>("vm-name").value = "";
  for (const o of byId<HTMLSelectElement>("vm-modules").options) o.selected = false;
  select(vm.id);
}

function renderCreateForm(): void {
  const sel = byId<HTMLSelectElement>("vm-modules");
  const chosen = new Set([...sel.selectedOptions].map((o) => o.value));
  sel.replaceChildren(...requestable().map((m) => option(m, m, chosen.has(m))));
}

/** Every page of VMs (bounded), replacing what the page had. */
export async function loadVms(): Promise<void> {
  const all: Vm[] = [];
  let pageToken: string | undefined;
  for (let i = 0; i < 100; i++) {
    const page = await call(
      "list VMs",
      api.GET("/v1/vms", { params: { query: pageToken ? { limit: 1000, page_token: pageToken } : { limit: 1000 } } }),
    );
    all.push(...page.items);
    if (!page.next_page_token) break;
    pageToken = page.next_page_token;
  }
  state.vms.clear();
  for (const vm of all) state.vms.set(vm.id, vm);
  for (const id of [...state.requests.keys()]) if (!state.vms.has(id)) state.requests.delete(id);
  changed("vms");
  changed("requests");
}

/** Without the live stream: each VM's requests, fetched once. */
export async function loadAllRequests(): Promise<void> {
  for (const id of [...state.vms.keys()].slice(0, 200)) await loadRequests(id);
}

export function initVms(): void {
  on("vms", render);
  on("requests", render);
  on("nodes", renderFilters);
  on("tenants", renderFilters);
  on("modules", () => {
    renderCreateForm();
    renderDetail();
  });
  for (const id of ["vm-filter-tenant", "vm-filter-phase", "vm-filter-node"]) byId(id).addEventListener("change", render);
  byId("create-vm").addEventListener("submit", (e) => {
    e.preventDefault();
    void attempt(create);
  });
}

export function resetVms(): void {
  selected = null;
  fill(byId("vm-detail"));
  delete byId("vm-detail").dataset.vmId;
  byId("vm-detail").hidden = true;
  byId<HTMLFormElement>("create-vm").reset();
}
