// The audit trail: every page once (the newest kept), then live from the stream;
// filterable by text and outcome.

import { api, call, type AuditEvent } from "../api/client";
import { byId, el, fill, row, shortTime } from "../dom";
import { addEvents, on, state } from "../state";

/** Rows rendered at most (newest first); the filter searches all kept events. */
const SHOWN = 300;

function matches(e: AuditEvent, q: string, outcome: string): boolean {
  if (outcome && e.outcome !== outcome) return false;
  if (!q) return true;
  return [e.action, e.actor, e.resource, e.tenant ?? "", e.detail ?? ""].some((s) => s.toLowerCase().includes(q));
}

function render(): void {
  const q = byId<HTMLInputElement>("events-filter").value.trim().toLowerCase();
  const outcome = byId<HTMLSelectElement>("events-outcome").value;
  const hits: AuditEvent[] = [];
  for (let i = state.events.length - 1; i >= 0 && hits.length < SHOWN; i--) {
    if (matches(state.events[i], q, outcome)) hits.push(state.events[i]);
  }
  const rows = hits.map((e) => {
    const tr = row("event-row", [
      e.seq,
      shortTime(e.time),
      e.actor,
      e.tenant,
      e.action,
      el("span", { class: "mono" }, e.resource),
      el("span", { class: `outcome-${e.outcome}` }, e.outcome),
      e.detail,
    ]);
    tr.dataset.action = e.action;
    tr.dataset.resource = e.resource;
    tr.dataset.actor = e.actor;
    return tr;
  });
  fill(byId("events-body"), ...rows);
  byId("events-count").textContent = `${state.events.length} events kept, ${rows.length} shown`;
}

/** Pages through the trail once (bounded), keeping the newest. */
export async function loadEvents(): Promise<void> {
  let pageToken: string | undefined;
  for (let i = 0; i < 200; i++) {
    const page = await call(
      "list events",
      api.GET("/v1/events", { params: { query: pageToken ? { limit: 1000, page_token: pageToken } : { limit: 1000 } } }),
    );
    addEvents(page.items);
    if (!page.next_page_token) break;
    pageToken = page.next_page_token;
  }
}

export function initEvents(): void {
  on("events", render);
  byId("events-filter").addEventListener("input", render);
  byId("events-outcome").addEventListener("change", render);
}

export function resetEvents(): void {
  byId<HTMLInputElement>("events-filter").value = "";
  byId<HTMLSelectElement>("events-outcome").value = "";
}
