// The module catalog: searchable, paginated, by kernel release. Admins also see and set
// each module's policy (approved for whom) and publish modules.

import { api, call, type CatalogModule } from "../api/client";
import { button, byId, fill, row, setOptions } from "../dom";
import { attempt } from "../errors";
import { changed, on, state } from "../state";

const PAGE = 50;
let page = 0;

function info(m: CatalogModule, key: string): string {
  for (const v of m.versions) if (v.modinfo[key]) return v.modinfo[key];
  return "";
}

function policyText(m: CatalogModule): string {
  const p = m.policy;
  if (!p || !p.approved) return "not approved";
  const who = p.tenants.includes("*") ? "all tenants" : p.tenants.length ? p.tenants.join(", ") : "no tenant";
  // What differs from the default (the guest kernel's keys, GPL-compatible) is said.
  const signers = p.signers && !(p.signers.length === 1 && p.signers[0] === "kernel") ? `; signed by ${p.signers.join(", ")}` : "";
  const licenses = p.licenses && p.licenses.length ? `; also ${p.licenses.join(", ")}` : "";
  return who + signers + licenses;
}

function commaList(id: string): string[] {
  return byId<HTMLInputElement>(id)
    .value.split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function matches(m: CatalogModule): boolean {
  const release = byId<HTMLSelectElement>("module-release").value;
  if (release && !m.versions.some((v) => v.kernel_release === release)) return false;
  if (state.isAdmin && byId<HTMLInputElement>("module-approved-only").checked && !m.policy?.approved) return false;
  const q = byId<HTMLInputElement>("module-search").value.trim().toLowerCase();
  if (!q) return true;
  return [m.name, info(m, "description"), info(m, "license"), info(m, "alias")].some((s) => s.toLowerCase().includes(q));
}

/** The kernel releases of the catalog, newest name first. */
export function releases(): string[] {
  const s = new Set<string>();
  for (const m of state.modules) for (const v of m.versions) s.add(v.kernel_release);
  return [...s].sort().reverse();
}

function render(): void {
  setOptions(byId<HTMLSelectElement>("module-release"), [["", "any"], ...releases().map((r): [string, string] => [r, r])]);
  const shown = state.modules.filter(matches);
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  if (page >= pages) page = pages - 1;
  const slice = shown.slice(page * PAGE, (page + 1) * PAGE);
  const rows = slice.map((m) => {
    const cells = [
      m.name,
      m.versions.map((v) => v.kernel_release).join(", "),
      m.versions.map((v) => `${Math.ceil(v.size / 1024)} KiB`).join(", "),
      info(m, "license"),
      info(m, "description"),
    ];
    const tr = state.isAdmin
      ? row("module-row", [...cells, policyText(m)], button("Policy", "module-edit-policy", () => editPolicy(m)))
      : row("module-row", cells);
    tr.dataset.module = m.name;
    return tr;
  });
  fill(byId("modules-body"), ...rows);
  byId("module-count").textContent = `${shown.length} of ${state.modules.length} modules`;
  byId("module-page").textContent = `page ${page + 1} of ${pages}`;
  byId<HTMLButtonElement>("module-prev").disabled = page === 0;
  byId<HTMLButtonElement>("module-next").disabled = page >= pages - 1;
}

let editing: string | null = null;

function editPolicy(m: CatalogModule): void {
  editing = m.name;
  byId("policy-module").textContent = m.name;
  byId<HTMLInputElement>("policy-approved").checked = m.policy?.approved ?? false;
  byId<HTMLInputElement>("policy-tenants").value = (m.policy?.tenants ?? []).join(", ");
  byId<HTMLInputElement>("policy-signers").value = (m.policy?.signers ?? ["kernel"]).join(", ");
  byId<HTMLInputElement>("policy-licenses").value = (m.policy?.licenses ?? []).join(", ");
  byId("policy-form").hidden = false;
  byId("policy-form").scrollIntoView({ block: "nearest" });
  byId("policy-approved").focus();
}

async function savePolicy(): Promise<void> {
  if (!editing) return;
  const name = editing;
  const approved = byId<HTMLInputElement>("policy-approved").checked;
  const tenants = commaList("policy-tenants");
  const signers = commaList("policy-signers");
  const licenses = commaList("policy-licenses");
  const policy = await call(
    `set the policy of ${name}`,
    api.PUT("/v1/admin/modules/{name}/policy", { params: { path: { name } }, body: { approved, tenants, signers, licenses } }),
  );
  state.modules = state.modules.map((m) => (m.name === name ? { ...m, policy } : m));
  changed("modules");
  editing = null;
  byId("policy-form").hidden = true;
}

async function publish(): Promise<void> {
  const name = byId<HTMLInputElement>("publish-name").value.trim();
  const release = byId<HTMLInputElement>("publish-release").value.trim();
  const file = byId<HTMLInputElement>("publish-file").files?.[0];
  if (!file) throw new Error("publish: choose a .ko file");
  const force = byId<HTMLInputElement>("publish-force").checked;
  const bytes = new Uint8Array(await file.arrayBuffer());
  await call(
    `publish ${name} for ${release}`,
    api.PUT("/v1/admin/modules/{name}", {
      params: { path: { name }, query: force ? { kernel_release: release, force: true } : { kernel_release: release } },
      // The document types the body as an array of bytes; it is sent as they are.
      body: bytes as unknown as number[],
      bodySerializer: (b: unknown) => b as BodyInit,
      headers: { "Content-Type": "application/octet-stream" },
    }),
  );
  byId<HTMLFormElement>("publish-form").reset();
  await loadModules();
}

export async function loadModules(): Promise<void> {
  state.modules = await call("list modules", api.GET("/v1/modules"));
  changed("modules");
}

let refetch: number | null = null;

/** Policy and catalog changes of others show up in the audit trail: re-fetch once. */
export function modulesMayHaveChanged(): void {
  if (refetch !== null) return;
  refetch = window.setTimeout(() => {
    refetch = null;
    if (state.claims) void attempt(loadModules);
  }, 500);
}

export function initModules(): void {
  on("modules", render);
  on("session", render);
  const again = () => {
    page = 0;
    render();
  };
  byId("module-search").addEventListener("input", again);
  byId("module-release").addEventListener("change", again);
  byId("module-approved-only").addEventListener("change", again);
  byId("module-prev").addEventListener("click", () => {
    page = Math.max(0, page - 1);
    render();
  });
  byId("module-next").addEventListener("click", () => {
    page++;
    render();
  });
  byId("policy-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void attempt(savePolicy);
  });
  byId("policy-cancel").addEventListener("click", () => {
    editing = null;
    byId("policy-form").hidden = true;
  });
  byId("publish-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void attempt(publish);
  });
}

export function resetModules(): void {
  page = 0;
  editing = null;
  byId("policy-form").hidden = true;
  byId("policy-module").textContent = "";
  byId<HTMLInputElement>("module-search").value = "";
  if (refetch !== null) window.clearTimeout(refetch);
  refetch = null;
}
