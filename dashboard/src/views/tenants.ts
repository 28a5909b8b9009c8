// Tenants (admin: every tenant's quota and usage, create, edit quota) and a tenant's own
// quota and usage.

import { api, call, type Quota, type Tenant } from "../api/client";
import { button, byId, el, fill, mib, row, shortTime } from "../dom";
import { attempt } from "../errors";
import { changed, on, state } from "../state";

function used(u: number, max: number, fmt: (n: number) => string = String): string {
  return `${fmt(u)} / ${fmt(max)}`;
}

function renderAll(): void {
  const rows = [...state.tenants]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((t) => {
      const tr = row(
        "tenant-row",
        [
          t.name,
          used(t.usage.vms, t.quota.max_vms),
          used(t.usage.vcpus, t.quota.max_vcpus),
          used(t.usage.memory_mib, t.quota.max_memory_mib, mib),
          used(t.usage.networks ?? 0, t.quota.max_networks ?? 0),
          `${t.quota.api_requests_per_sec ?? "-"}/s (burst ${t.quota.api_burst ?? "-"})`,
          shortTime(t.created_at),
        ],
        button("Edit quota", "tenant-edit-quota", () => editQuota(t)),
      );
      tr.dataset.tenant = t.name;
      return tr;
    });
  fill(byId("tenants-body"), ...rows);
}

function renderMine(): void {
  const t = state.myTenant;
  if (!t) {
    fill(byId("quota-body"));
    return;
  }
  const line = (what: string, u: number, max: number, fmt: (n: number) => string = String) => {
    const pct = max > 0 ? Math.min(100, Math.round((u * 100) / max)) : 100;
    const meter = el("meter", { min: 0, max: 100, value: pct, title: `${pct}%` });
    const tr = row("quota-row", [what, fmt(u), fmt(max)], meter);
    tr.dataset.resource = what;
    return tr;
  };
  fill(
    byId("quota-body"),
    line("VMs", t.usage.vms, t.quota.max_vms),
    line("vCPUs", t.usage.vcpus, t.quota.max_vcpus),
    line("memory", t.usage.memory_mib, t.quota.max_memory_mib, mib),
    line("networks", t.usage.networks ?? 0, t.quota.max_networks ?? 0),
  );
}

function num(id: string): number {
  return Number(byId<HTMLInputElement>(id).value);
}

let editing: Tenant | null = null;

function editQuota(t: Tenant): void {
  editing = t;
  byId("quota-tenant").textContent = t.name;
  byId<HTMLInputElement>("quota-vms").value = String(t.quota.max_vms);
  byId<HTMLInputElement>("quota-vcpus").value = String(t.quota.max_vcpus);
  byId<HTMLInputElement>("quota-memory").value = String(t.quota.max_memory_mib);
  byId<HTMLInputElement>("quota-networks").value = String(t.quota.max_networks ?? 8);
  byId("quota-form").hidden = false;
}

async function saveQuota(): Promise<void> {
  if (!editing) return;
  const name = editing.name;
  // The rate limits are kept as they are; the form edits the holdings.
  const quota: Quota = {
    ...editing.quota,
    max_vms: num("quota-vms"),
    max_vcpus: num("quota-vcpus"),
    max_memory_mib: num("quota-memory"),
    max_networks: num("quota-networks"),
  };
  const t = await call(
    `set the quota of ${name}`,
    api.PUT("/v1/tenants/{name}/quota", { params: { path: { name } }, body: quota }),
  );
  state.tenants = state.tenants.map((x) => (x.name === t.name ? t : x));
  changed("tenants");
  editing = null;
  byId("quota-form").hidden = true;
}

async function createTenant(): Promise<void> {
  const name = byId<HTMLInputElement>("tenant-name").value.trim();
  const quota: Quota = { max_vms: num("tenant-vms"), max_vcpus: num("tenant-vcpus"), max_memory_mib: num("tenant-memory") };
  const t = await call(`create tenant ${name}`, api.POST("/v1/tenants", { body: { name, quota } }));
  state.tenants = [...state.tenants.filter((x) => x.name !== t.name), t];
  changed("tenants");
  byId<HTMLFormElement>("create-tenant").reset();
}

export async function loadTenants(): Promise<void> {
  if (state.isAdmin) {
    state.tenants = await call("list tenants", api.GET("/v1/tenants"));
  } else if (state.claims?.tenant) {
    const name = state.claims.tenant;
    state.myTenant = await call(`read tenant ${name}`, api.GET("/v1/tenants/{name}", { params: { path: { name } } }));
  }
  changed("tenants");
}

let refetch: number | null = null;

/** Usage follows VMs: one re-fetch of the tenant list shortly after VMs change. */
export function tenantsMayHaveChanged(): void {
  if (refetch !== null) return;
  refetch = window.setTimeout(() => {
    refetch = null;
    if (state.claims) void attempt(loadTenants);
  }, 500);
}

export function initTenants(): void {
  on("tenants", () => {
    renderAll();
    renderMine();
  });
  byId("quota-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void attempt(saveQuota);
  });
  byId("quota-cancel").addEventListener("click", () => {
    editing = null;
    byId("quota-form").hidden = true;
  });
  byId("create-tenant").addEventListener("submit", (e) => {
    e.preventDefault();
    void attempt(createTenant);
  });
}

export function resetTenants(): void {
  editing = null;
  byId("quota-form").hidden = true;
  byId("quota-tenant").textContent = "";
  if (refetch !== null) window.clearTimeout(refetch);
  refetch = null;
}
