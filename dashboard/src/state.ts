// What the page knows: filled once from the lists, then kept current by the live stream.
// Views subscribe to topics and re-render (coalesced into one pass per task) when one
// changes. clear() forgets everything (Forget token).

import type { AuditEvent, CatalogModule, Claims, ModuleRequest, Node, Tenant, TrustEntry, Vm } from "./api/client";

export type Topic = "session" | "vms" | "requests" | "nodes" | "tenants" | "modules" | "trust" | "events";

/** At most this many audit events are kept (the newest). */
export const MAX_EVENTS = 2000;

export const state = {
  claims: null as Claims | null,
  isAdmin: false,
  vms: new Map<string, Vm>(),
  requests: new Map<string, ModuleRequest[]>(),
  nodes: [] as Node[],
  tenants: [] as Tenant[],
  myTenant: null as Tenant | null,
  modules: [] as CatalogModule[],
  trust: [] as TrustEntry[],
  events: [] as AuditEvent[],
  eventSeqs: new Set<number>(),
};

const listeners = new Map<Topic, Array<() => void>>();
const dirty = new Set<Topic>();
let scheduled = false;

export function on(topic: Topic, fn: () => void): void {
  const l = listeners.get(topic) ?? [];
  l.push(fn);
  listeners.set(topic, l);
}

export function changed(topic: Topic): void {
  dirty.add(topic);
  if (scheduled) return;
  scheduled = true;
  window.setTimeout(flush, 0);
}

/** Renders what changed now (rather than in the next task). */
export function flush(): void {
  scheduled = false;
  const topics = [...dirty];
  dirty.clear();
  const run = new Set<() => void>();
  for (const t of topics) for (const fn of listeners.get(t) ?? []) run.add(fn);
  for (const fn of run) fn();
}

export function lastSeq(): number | null {
  const n = state.events.length;
  return n === 0 ? null : state.events[n - 1].seq;
}

/** Adds audit events (any order, duplicates ignored), keeping them sorted by seq. */
export function addEvents(evs: AuditEvent[]): void {
  let added = false;
  for (const e of evs) {
    if (state.eventSeqs.has(e.seq)) continue;
    state.eventSeqs.add(e.seq);
    state.events.push(e);
    added = true;
  }
  if (!added) return;
  state.events.sort((a, b) => a.seq - b.seq);
  while (state.events.length > MAX_EVENTS) {
    const old = state.events.shift();
    if (old) state.eventSeqs.delete(old.seq);
  }
  changed("events");
}

export function putVm(vm: Vm): void {
  state.vms.set(vm.id, vm);
  changed("vms");
}

export function dropVm(id: string): void {
  state.vms.delete(id);
  state.requests.delete(id);
  changed("vms");
  changed("requests");
}

export function setRequests(vmId: string, items: ModuleRequest[]): void {
  state.requests.set(vmId, items);
  changed("requests");
}

export function clear(): void {
  state.claims = null;
  state.isAdmin = false;
  state.vms.clear();
  state.requests.clear();
  state.nodes = [];
  state.tenants = [];
  state.myTenant = null;
  state.modules = [];
  state.trust = [];
  state.events = [];
  state.eventSeqs.clear();
  for (const t of ["session", "vms", "requests", "nodes", "tenants", "modules", "trust", "events"] as Topic[]) changed(t);
}
