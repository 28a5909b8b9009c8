// Errors stay on the page until dismissed (or until Forget token).

import { Superseded } from "./api/client";
import { byId, button, el } from "./dom";

export function showError(e: unknown): void {
  if (e instanceof Superseded) return;
  const msg = e instanceof Error ? e.message : String(e);
  const list = byId("errors");
  const li = el("li", { "data-testid": "error", role: "alert" }, el("span", { class: "msg" }, msg));
  li.appendChild(button("Dismiss", "dismiss-error", () => li.remove(), "small"));
  list.appendChild(li);
}

export function clearErrors(): void {
  byId("errors").replaceChildren();
}

/** Runs an action, showing its error if it fails. */
export async function attempt(fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    showError(e);
  }
}
