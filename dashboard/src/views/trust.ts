// The trust store (admins): the operator certificates module policies may name as
// signers. Listed with what names them; added from a PEM; removed while nothing does.

import { api, call } from "../api/client";
import { button, byId, fill, row, shortTime } from "../dom";
import { attempt } from "../errors";
import { changed, on, state } from "../state";

function render(): void {
  const rows = state.trust.map((t) => {
    const usedBy = t.used_by ?? [];
    const remove = button("Remove", "trust-remove", () => void attempt(() => removeTrusted(t.name)), "danger");
    remove.disabled = usedBy.length > 0;
    remove.title = usedBy.length ? `named by the policy of ${usedBy.join(", ")}` : "";
    const tr = row(
      "trust-row",
      [t.name, t.subject, t.key, t.sha256.slice(0, 16), usedBy.length ? usedBy.join(", ") : "-", shortTime(t.added_at)],
      remove,
    );
    tr.dataset.trust = t.name;
    return tr;
  });
  fill(byId("trust-body"), ...rows);
}

export async function loadTrust(): Promise<void> {
  if (!state.isAdmin) return;
  state.trust = await call("list trusted certificates", api.GET("/v1/admin/trust"));
  changed("trust");
}

async function addTrusted(): Promise<void> {
  const name = byId<HTMLInputElement>("trust-name").value.trim();
  const certificate_pem = byId<HTMLTextAreaElement>("trust-pem").value.trim() + "\n";
  await call(`trust ${name}`, api.PUT("/v1/admin/trust/{name}", { params: { path: { name } }, body: { certificate_pem } }));
  byId<HTMLFormElement>("trust-form").reset();
  await loadTrust();
}

async function removeTrusted(name: string): Promise<void> {
  if (!window.confirm(`Remove the certificate ${name} from the trust store?`)) return;
  const r = await api.DELETE("/v1/admin/trust/{name}", { params: { path: { name } } });
  if (r.response.status !== 204) await call(`remove ${name}`, Promise.resolve(r));
  await loadTrust();
}

export function initTrust(): void {
  on("trust", render);
  byId("trust-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void attempt(addTrusted);
  });
}

export function resetTrust(): void {
  byId<HTMLFormElement>("trust-form").reset();
}
