// DOM helpers. Every value from the server goes into the page as text: elements are made
// with createElement, text with createTextNode; nothing here (or anywhere in the
// dashboard) assigns innerHTML/outerHTML or calls insertAdjacentHTML.

export type Child = Node | string | number | boolean | null | undefined;

/** Attributes are set with setAttribute (values are strings, never markup); `false` and
 * `undefined` leave one out. */
export type Attrs = Record<string, string | number | boolean | undefined>;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
  append(e, children);
  return e;
}

export function append(parent: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces all children of `parent`. */
export function fill(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, children);
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`the page has no #${id}`);
  return e as T;
}

export function button(label: string, testid: string, onClick: () => void, cls = ""): HTMLButtonElement {
  const b = el("button", { type: "button", "data-testid": testid, class: cls || undefined }, label);
  b.addEventListener("click", onClick);
  return b;
}

/** A table row of text cells (null/undefined shown as "-"), then any nodes given. */
export function row(testid: string, cells: Child[], ...extra: Node[]): HTMLTableRowElement {
  const tr = el("tr", { "data-testid": testid });
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.appendChild(c);
    else td.textContent = c === null || c === undefined || c === "" ? "-" : String(c);
    tr.appendChild(td);
  }
  for (const x of extra) tr.appendChild(el("td", {}, x));
  return tr;
}

export function option(value: string, label: string, selected = false): HTMLOptionElement {
  const o = el("option", { value }, label);
  o.selected = selected;
  return o;
}

/** Fills a <select>, keeping its current choice when it is still offered. */
export function setOptions(sel: HTMLSelectElement, opts: [string, string][]): void {
  const cur = sel.value;
  sel.replaceChildren(...opts.map(([v, l]) => option(v, l, v === cur)));
}

export function mib(n: number): string {
  return n >= 1024 && n % 1024 === 0 ? `${n / 1024} GiB` : `${n} MiB`;
}

/** "12 s", "3 min", "2 h" */
export function age(secs: number): string {
  if (secs < 0) secs = 0;
  if (secs < 120) return `${Math.floor(secs)} s`;
  if (secs < 7200) return `${Math.floor(secs / 60)} min`;
  return `${Math.floor(secs / 3600)} h`;
}

export function shortTime(iso: string): string {
  // 2026-12-02T19:13:36.717165773Z -> 2026-12-02 19:13:36
  return iso.replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, "");
}
