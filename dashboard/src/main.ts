// The modvisor console: sign-in with a bearer token (kept in session storage only), tabs
// by role, the lists fetched once, then the live stream applied to them.

import { claims, getToken, setToken, type AuditEvent, type ModuleRequest, type Node, type Vm } from "./api/client";
import { byId, shortTime } from "./dom";
import { attempt, clearErrors, showError } from "./errors";
import { addEvents, changed, clear, dropVm, flush, lastSeq, putVm, setRequests, state } from "./state";
import { LiveStream, type StreamFrame } from "./stream";
import { initEvents, loadEvents, resetEvents } from "./views/events";
import { initModules, loadModules, modulesMayHaveChanged, resetModules } from "./views/modules";
import { initTrust, loadTrust, resetTrust } from "./views/trust";
import { initNodes, loadNodes, nodesRead } from "./views/nodes";
import { initRequests } from "./views/requests";
import { initTenants, loadTenants, resetTenants, tenantsMayHaveChanged } from "./views/tenants";
import { initVms, loadAllRequests, loadVms, resetVms } from "./views/vms";

const STORAGE_KEY = "modvisor-token";

let stream: LiveStream | null = null;

function setLive(text: string, cls: "on" | "off" | "wait"): void {
  const l = byId("live");
  l.textContent = text;
  l.className = `live ${cls}`;
}

function showTab(tab: string): void {
  for (const b of document.querySelectorAll<HTMLButtonElement>("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === tab);
  }
  for (const s of document.querySelectorAll<HTMLElement>("main > section.view")) {
    s.hidden = s.id !== `view-${tab}`;
  }
}

function onFrame(f: StreamFrame): void {
  let data: unknown;
  try {
    data = JSON.parse(f.data);
  } catch {
    showError(`live stream: a "${f.event}" frame that is not JSON`);
    return;
  }
  switch (f.event) {
    case "audit": {
      const e = data as AuditEvent;
      addEvents([e]);
      if (e.action.startsWith("module.")) modulesMayHaveChanged();
      if (e.action.startsWith("trust.") || e.action === "module.set_policy") void attempt(loadTrust);
      if (e.action.startsWith("tenant.")) tenantsMayHaveChanged();
      // The stream sends vm_deleted only for VMs it had sent: one created and removed
      // between two of its looks (this page knew it from the create answer) ends here.
      if (e.action === "vm.deleted" && e.outcome === "success" && e.resource.startsWith("vms/")) {
        const id = e.resource.slice("vms/".length);
        if (state.vms.has(id)) {
          dropVm(id);
          tenantsMayHaveChanged();
        }
      }
      break;
    }
    case "vm": {
      const vm = data as Vm;
      const old = state.vms.get(vm.id);
      putVm(vm);
      if (!old || old.spec.vcpus !== vm.spec.vcpus || old.spec.memory_mib !== vm.spec.memory_mib) tenantsMayHaveChanged();
      break;
    }
    case "vm_deleted":
      dropVm((data as { id: string }).id);
      tenantsMayHaveChanged();
      break;
    case "module_requests": {
      const m = data as { vm_id: string; items: ModuleRequest[] };
      setRequests(m.vm_id, m.items);
      break;
    }
    case "nodes":
      state.nodes = data as Node[];
      nodesRead();
      changed("nodes");
      break;
    default:
      break; // a kind this page does not know yet
  }
}

function startStream(): void {
  stream?.stop();
  stream = new LiveStream({
    frame: onFrame,
    afterSeq: lastSeq,
    connected(again) {
      setLive("live", "on");
      // VMs deleted while the stream was down sent no vm_deleted: read the list again.
      if (again) void attempt(loadVms);
    },
    down(why, retryInMs) {
      if (retryInMs === null) {
        setLive(`no live updates: ${why}`, "off");
        if (why.includes("404")) void attempt(loadAllRequests);
        else showError(`Live updates stopped: ${why}`);
      } else {
        setLive(`reconnecting in ${Math.round(retryInMs / 1000)} s (${why})`, "wait");
      }
    },
  });
  stream.start();
}

async function signIn(raw: string): Promise<void> {
  const tok = raw.trim().replace(/^Bearer\s+/i, "");
  forget(false);
  if (!tok) throw new Error("Paste a bearer token first.");
  const c = claims(tok);
  if (!c || typeof c.role !== "string") {
    throw new Error("That is not a modvisor token: a token is a JWT, three base64url parts separated by dots.");
  }
  if (c.role !== "admin" && c.role !== "tenant") {
    throw new Error(`A ${c.role} token has no console: use an admin's or a tenant's.`);
  }
  setToken(tok);
  state.claims = c;
  state.isAdmin = c.role === "admin";
  // The server decides whether the token is good: nothing is shown before it says so.
  try {
    await loadVms();
  } catch (e) {
    forget(false);
    throw new Error(`The control plane refused this token. ${e instanceof Error ? e.message : String(e)}`);
  }
  sessionStorage.setItem(STORAGE_KEY, tok);
  byId<HTMLTextAreaElement>("token").value = "";
  const who = c.role === "admin" ? `admin (${c.sub ?? "?"})` : `tenant ${c.tenant ?? "?"} (${c.sub ?? "?"})`;
  const expires = typeof c.exp === "number" ? `, token expires ${shortTime(new Date(c.exp * 1000).toISOString())} UTC` : "";
  byId("who").textContent = who + expires;
  document.body.classList.add(state.isAdmin ? "role-admin" : "role-tenant");
  byId("tabs").hidden = false;
  byId("main").hidden = false;
  changed("session");
  showTab(state.isAdmin ? "nodes" : "vms");
  const loads = [loadModules(), loadTenants(), loadEvents()];
  if (state.isAdmin) loads.push(loadNodes(), loadTrust());
  const results = await Promise.allSettled(loads);
  for (const r of results) if (r.status === "rejected") showError(r.reason);
  if (getToken() === tok) startStream();
}

/** Forgets the token and every piece of data the page holds. */
function forget(clearMessages: boolean): void {
  stream?.stop();
  stream = null;
  setToken("");
  sessionStorage.clear();
  clear();
  resetVms();
  resetModules();
  resetTrust();
  resetTenants();
  resetEvents();
  for (const f of document.querySelectorAll("form")) f.reset();
  if (clearMessages) clearErrors();
  document.body.classList.remove("role-admin", "role-tenant");
  byId("who").textContent = "not signed in";
  byId("tabs").hidden = true;
  byId("main").hidden = true;
  setLive("offline", "off");
  flush();
}

function init(): void {
  initNodes();
  initTenants();
  initModules();
  initTrust();
  initVms();
  initRequests();
  initEvents();
  for (const b of document.querySelectorAll<HTMLButtonElement>("#tabs button")) {
    b.addEventListener("click", () => showTab(b.dataset.tab ?? "vms"));
  }
  byId("use-token").addEventListener("click", () => void attempt(() => signIn(byId<HTMLTextAreaElement>("token").value)));
  byId("forget-token").addEventListener("click", () => {
    forget(true);
    byId<HTMLTextAreaElement>("token").value = "";
  });
  const saved = sessionStorage.getItem(STORAGE_KEY);
  if (saved) void attempt(() => signIn(saved));
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
