// The API client: openapi-fetch, typed by schema.d.ts (generated from
// openapi/control-plane.json by `npm run generate`), with the bearer token added to each
// request and RFC 9457 problems turned into ApiError.

import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Vm = Schemas["Vm"];
export type VmSpec = Schemas["VmSpec"];
export type Node = Schemas["Node"];
export type Tenant = Schemas["Tenant"];
export type Quota = Schemas["Quota"];
export type CatalogModule = Schemas["CatalogModule"];
export type ModulePolicy = Schemas["ModulePolicy"];
export type ModuleRequest = Schemas["ModuleRequest"];
export type TrustEntry = Schemas["TrustEntry"];
export type AuditEvent = Schemas["Event"];
export type Problem = Schemas["Problem"] & { request_id?: string | null };

/** A refused or failed call, with the server's problem when it sent one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem | null,
    what: string,
  ) {
    super(describe(status, problem, what));
  }
}

function describe(status: number, p: Problem | null, what: string): string {
  if (!p) return `${what}: HTTP ${status}`;
  let s = `${what}: ${p.title} (${status}): ${p.detail}`;
  if (p.field) s += ` [field ${p.field}]`;
  if (p.quota) s += ` [quota ${p.quota}]`;
  if (p.request_id) s += ` [request ${p.request_id}]`;
  return s;
}

let token = "";
let epoch = 0;

/** Thrown for an answer that arrived after the token changed: it is dropped, not shown. */
export class Superseded extends Error {}

export function setToken(t: string): void {
  token = t;
  epoch++;
}

export function getToken(): string {
  return token;
}

const auth: Middleware = {
  onRequest({ request }) {
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
};

export const api = createClient<paths>({ baseUrl: "" });
api.use(auth);

function isProblem(x: unknown): x is Problem {
  return typeof x === "object" && x !== null && "status" in x && "title" in x;
}

/** Awaits an openapi-fetch call: its data, or an ApiError. */
export async function call<T>(
  what: string,
  p: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const asked = epoch;
  let r;
  try {
    r = await p;
  } catch (e) {
    if (asked !== epoch) throw new Superseded(what);
    throw new Error(`${what}: the control plane did not answer (${String(e)})`);
  }
  if (asked !== epoch) throw new Superseded(what);
  if (!r.response.ok) {
    const err = isProblem(r.error) ? r.error : null;
    if (err && !err.request_id) err.request_id = r.response.headers.get("x-request-id");
    throw new ApiError(r.response.status, err, what);
  }
  return r.data as T;
}

export interface Claims {
  sub?: string;
  role?: string;
  tenant?: string;
  exp?: number;
}

/** The token's claims, decoded for display only (the server verifies the token). */
export function claims(t: string): Claims | null {
  const parts = t.split(".");
  if (parts.length !== 3) return null;
  try {
    let b = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    while (b.length % 4) b += "=";
    const bin = atob(b);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const c = JSON.parse(new TextDecoder().decode(bytes));
    return typeof c === "object" && c !== null ? (c as Claims) : null;
  } catch {
    return null;
  }
}
