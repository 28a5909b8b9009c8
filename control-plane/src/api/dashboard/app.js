// The modvisor console, built from dashboard/src by `cd dashboard && npm ci && npm run build`.
// Do not edit: CI rebuilds it and fails when the bytes differ.
"use strict";
(() => {
  // node_modules/openapi-fetch/dist/index.mjs
  var PATH_PARAM_RE = /\{[^{}]+\}/g;
  var supportsRequestInitExt = () => {
    return typeof process === "object" && Number.parseInt(process?.versions?.node?.substring(0, 2)) >= 18 && process.versions.undici;
  };
  function randomID() {
    return Math.random().toString(36).slice(2, 11);
  }
  function createClient(clientOptions) {
    let {
      baseUrl = "",
      Request: CustomRequest = globalThis.Request,
      fetch: baseFetch = globalThis.fetch,
      querySerializer: globalQuerySerializer,
      bodySerializer: globalBodySerializer,
      pathSerializer: globalPathSerializer,
      headers: baseHeaders,
      requestInitExt = void 0,
      ...baseOptions
    } = { ...clientOptions };
    requestInitExt = supportsRequestInitExt() ? requestInitExt : void 0;
    baseUrl = removeTrailingSlash(baseUrl);
    const globalMiddlewares = [];
    async function coreFetch(schemaPath, fetchOptions) {
      const {
        baseUrl: localBaseUrl,
        fetch: fetch2 = baseFetch,
        Request = CustomRequest,
        headers,
        params = {},
        parseAs = "json",
        querySerializer: requestQuerySerializer,
        bodySerializer = globalBodySerializer ?? defaultBodySerializer,
        pathSerializer: requestPathSerializer,
        body,
        middleware: requestMiddlewares = [],
        ...init2
      } = fetchOptions || {};
      let finalBaseUrl = baseUrl;
      if (localBaseUrl) {
        finalBaseUrl = removeTrailingSlash(localBaseUrl) ?? baseUrl;
      }
      let querySerializer = typeof globalQuerySerializer === "function" ? globalQuerySerializer : createQuerySerializer(globalQuerySerializer);
      if (requestQuerySerializer) {
        querySerializer = typeof requestQuerySerializer === "function" ? requestQuerySerializer : createQuerySerializer({
          ...typeof globalQuerySerializer === "object" ? globalQuerySerializer : {},
          ...requestQuerySerializer
        });
      }
      const pathSerializer = requestPathSerializer || globalPathSerializer || defaultPathSerializer;
      const serializedBody = body === void 0 ? void 0 : bodySerializer(
        body,
        // Note: we declare mergeHeaders() both here and below because it’s a bit of a chicken-or-egg situation:
        // bodySerializer() needs all headers so we aren’t dropping ones set by the user, however,
        // the result of this ALSO sets the lowest-priority content-type header. So we re-merge below,
        // setting the content-type at the very beginning to be overwritten.
        // Lastly, based on the way headers work, it’s not a simple “present-or-not” check becauase null intentionally un-sets headers.
        mergeHeaders(baseHeaders, headers, params.header)
      );
      const finalHeaders = mergeHeaders(
        // with no body, we should not to set Content-Type
        serializedBody === void 0 || // if serialized body is FormData; browser will correctly set Content-Type & boundary expression
        serializedBody instanceof FormData ? {} : {
          "Content-Type": "application/json"
        },
        baseHeaders,
        headers,
        params.header
      );
      const finalMiddlewares = [...globalMiddlewares, ...requestMiddlewares];
      const requestInit = {
        redirect: "follow",
        ...baseOptions,
        ...init2,
        body: serializedBody,
        headers: finalHeaders
      };
      let id;
      let options;
      let request = new Request(
        createFinalURL(schemaPath, { baseUrl: finalBaseUrl, params, querySerializer, pathSerializer }),
        requestInit
      );
      let response;
      for (const key in init2) {
        if (!(key in request)) {
          request[key] = init2[key];
        }
      }
      if (finalMiddlewares.length) {
        id = randomID();
        options = Object.freeze({
          baseUrl: finalBaseUrl,
          fetch: fetch2,
          parseAs,
          querySerializer,
          bodySerializer,
          pathSerializer
        });
        for (const m of finalMiddlewares) {
          if (m && typeof m === "object" && typeof m.onRequest === "function") {
            const result = await m.onRequest({
              request,
              schemaPath,
              params,
              options,
              id
            });
            if (result) {
              if (result instanceof Request) {
                request = result;
              } else if (result instanceof Response) {
                response = result;
                break;
              } else {
                throw new Error("onRequest: must return new Request() or Response() when modifying the request");
              }
            }
          }
        }
      }
      if (!response) {
        try {
          response = await fetch2(request, requestInitExt);
        } catch (error2) {
          let errorAfterMiddleware = error2;
          if (finalMiddlewares.length) {
            for (let i = finalMiddlewares.length - 1; i >= 0; i--) {
              const m = finalMiddlewares[i];
              if (m && typeof m === "object" && typeof m.onError === "function") {
                const result = await m.onError({
                  request,
                  error: errorAfterMiddleware,
                  schemaPath,
                  params,
                  options,
                  id
                });
                if (result) {
                  if (result instanceof Response) {
                    errorAfterMiddleware = void 0;
                    response = result;
                    break;
                  }
                  if (result instanceof Error) {
                    errorAfterMiddleware = result;
                    continue;
                  }
                  throw new Error("onError: must return new Response() or instance of Error");
                }
              }
            }
          }
          if (errorAfterMiddleware) {
            throw errorAfterMiddleware;
          }
        }
        if (finalMiddlewares.length) {
          for (let i = finalMiddlewares.length - 1; i >= 0; i--) {
            const m = finalMiddlewares[i];
            if (m && typeof m === "object" && typeof m.onResponse === "function") {
              const result = await m.onResponse({
                request,
                response,
                schemaPath,
                params,
                options,
                id
              });
              if (result) {
                if (!(result instanceof Response)) {
                  throw new Error("onResponse: must return new Response() when modifying the response");
                }
                response = result;
              }
            }
          }
        }
      }
      const contentLength = response.headers.get("Content-Length");
      if (response.status === 204 || request.method === "HEAD" || contentLength === "0" && !response.headers.get("Transfer-Encoding")?.includes("chunked")) {
        return response.ok ? { data: void 0, response } : { error: void 0, response };
      }
      if (response.ok) {
        const getResponseData = async () => {
          if (parseAs === "stream") {
            return response.body;
          }
          if (parseAs === "json" && !contentLength) {
            const raw = await response.text();
            return raw ? JSON.parse(raw) : void 0;
          }
          return await response[parseAs]();
        };
        return { data: await getResponseData(), response };
      }
      let error = await response.text();
      try {
        error = JSON.parse(error);
      } catch {
      }
      return { error, response };
    }
    return {
      request(method, url, init2) {
        return coreFetch(url, { ...init2, method: method.toUpperCase() });
      },
      /** Call a GET endpoint */
      GET(url, init2) {
        return coreFetch(url, { ...init2, method: "GET" });
      },
      /** Call a PUT endpoint */
      PUT(url, init2) {
        return coreFetch(url, { ...init2, method: "PUT" });
      },
      /** Call a POST endpoint */
      POST(url, init2) {
        return coreFetch(url, { ...init2, method: "POST" });
      },
      /** Call a DELETE endpoint */
      DELETE(url, init2) {
        return coreFetch(url, { ...init2, method: "DELETE" });
      },
      /** Call a OPTIONS endpoint */
      OPTIONS(url, init2) {
        return coreFetch(url, { ...init2, method: "OPTIONS" });
      },
      /** Call a HEAD endpoint */
      HEAD(url, init2) {
        return coreFetch(url, { ...init2, method: "HEAD" });
      },
      /** Call a PATCH endpoint */
      PATCH(url, init2) {
        return coreFetch(url, { ...init2, method: "PATCH" });
      },
      /** Call a TRACE endpoint */
      TRACE(url, init2) {
        return coreFetch(url, { ...init2, method: "TRACE" });
      },
      /** Register middleware */
      use(...middleware) {
        for (const m of middleware) {
          if (!m) {
            continue;
          }
          if (typeof m !== "object" || !("onRequest" in m || "onResponse" in m || "onError" in m)) {
            throw new Error("Middleware must be an object with one of `onRequest()`, `onResponse() or `onError()`");
          }
          globalMiddlewares.push(m);
        }
      },
      /** Unregister middleware */
      eject(...middleware) {
        for (const m of middleware) {
          const i = globalMiddlewares.indexOf(m);
          if (i !== -1) {
            globalMiddlewares.splice(i, 1);
          }
        }
      }
    };
  }
  function serializePrimitiveParam(name, value, options) {
    if (value === void 0 || value === null) {
      return "";
    }
    if (typeof value === "object") {
      throw new Error(
        "Deeply-nested arrays/objects aren’t supported. Provide your own `querySerializer()` to handle these."
      );
    }
    return `${name}=${options?.allowReserved === true ? value : encodeURIComponent(value)}`;
  }
  function serializeObjectParam(name, value, options) {
    if (!value || typeof value !== "object") {
      return "";
    }
    const values = [];
    const joiner = {
      simple: ",",
      label: ".",
      matrix: ";"
    }[options.style] || "&";
    if (options.style !== "deepObject" && options.explode === false) {
      for (const k in value) {
        values.push(k, options.allowReserved === true ? value[k] : encodeURIComponent(value[k]));
      }
      const final2 = values.join(",");
      switch (options.style) {
        case "form": {
          return `${name}=${final2}`;
        }
        case "label": {
          return `.${final2}`;
        }
        case "matrix": {
          return `;${name}=${final2}`;
        }
        default: {
          return final2;
        }
      }
    }
    for (const k in value) {
      const finalName = options.style === "deepObject" ? `${name}[${k}]` : k;
      values.push(serializePrimitiveParam(finalName, value[k], options));
    }
    const final = values.join(joiner);
    return options.style === "label" || options.style === "matrix" ? `${joiner}${final}` : final;
  }
  function serializeArrayParam(name, value, options) {
    if (!Array.isArray(value)) {
      return "";
    }
    if (options.explode === false) {
      const joiner2 = { form: ",", spaceDelimited: "%20", pipeDelimited: "|" }[options.style] || ",";
      const final = (options.allowReserved === true ? value : value.map((v) => encodeURIComponent(v))).join(joiner2);
      switch (options.style) {
        case "simple": {
          return final;
        }
        case "label": {
          return `.${final}`;
        }
        case "matrix": {
          return `;${name}=${final}`;
        }
        // case "spaceDelimited":
        // case "pipeDelimited":
        default: {
          return `${name}=${final}`;
        }
      }
    }
    const joiner = { simple: ",", label: ".", matrix: ";" }[options.style] || "&";
    const values = [];
    for (const v of value) {
      if (options.style === "simple" || options.style === "label") {
        values.push(options.allowReserved === true ? v : encodeURIComponent(v));
      } else {
        values.push(serializePrimitiveParam(name, v, options));
      }
    }
    return options.style === "label" || options.style === "matrix" ? `${joiner}${values.join(joiner)}` : values.join(joiner);
  }
  function createQuerySerializer(options) {
    return function querySerializer(queryParams) {
      const search = [];
      if (queryParams && typeof queryParams === "object") {
        for (const name in queryParams) {
          const value = queryParams[name];
          if (value === void 0 || value === null) {
            continue;
          }
          if (Array.isArray(value)) {
            if (value.length === 0) {
              continue;
            }
            search.push(
              serializeArrayParam(name, value, {
                style: "form",
                explode: true,
                ...options?.array,
                allowReserved: options?.allowReserved || false
              })
            );
            continue;
          }
          if (typeof value === "object") {
            search.push(
              serializeObjectParam(name, value, {
                style: "deepObject",
                explode: true,
                ...options?.object,
                allowReserved: options?.allowReserved || false
              })
            );
            continue;
          }
          search.push(serializePrimitiveParam(name, value, options));
        }
      }
      return search.join("&");
    };
  }
  function defaultPathSerializer(pathname, pathParams) {
    let nextURL = pathname;
    for (const match of pathname.match(PATH_PARAM_RE) ?? []) {
      let name = match.substring(1, match.length - 1);
      let explode = false;
      let style = "simple";
      if (name.endsWith("*")) {
        explode = true;
        name = name.substring(0, name.length - 1);
      }
      if (name.startsWith(".")) {
        style = "label";
        name = name.substring(1);
      } else if (name.startsWith(";")) {
        style = "matrix";
        name = name.substring(1);
      }
      if (!pathParams || pathParams[name] === void 0 || pathParams[name] === null) {
        continue;
      }
      const value = pathParams[name];
      if (Array.isArray(value)) {
        nextURL = nextURL.replace(match, serializeArrayParam(name, value, { style, explode }));
        continue;
      }
      if (typeof value === "object") {
        nextURL = nextURL.replace(match, serializeObjectParam(name, value, { style, explode }));
        continue;
      }
      if (style === "matrix") {
        nextURL = nextURL.replace(match, `;${serializePrimitiveParam(name, value)}`);
        continue;
      }
      nextURL = nextURL.replace(match, style === "label" ? `.${encodeURIComponent(value)}` : encodeURIComponent(value));
    }
    return nextURL;
  }
  function defaultBodySerializer(body, headers) {
    if (body instanceof FormData) {
      return body;
    }
    if (headers) {
      const contentType = headers.get instanceof Function ? headers.get("Content-Type") ?? headers.get("content-type") : headers["Content-Type"] ?? headers["content-type"];
      if (contentType === "application/x-www-form-urlencoded") {
        return new URLSearchParams(body).toString();
      }
    }
    return JSON.stringify(body);
  }
  function createFinalURL(pathname, options) {
    let finalURL = `${options.baseUrl}${pathname}`;
    if (options.params?.path) {
      finalURL = options.pathSerializer(finalURL, options.params.path);
    }
    let search = options.querySerializer(options.params.query ?? {});
    if (search.startsWith("?")) {
      search = search.substring(1);
    }
    if (search) {
      finalURL += `?${search}`;
    }
    return finalURL;
  }
  function mergeHeaders(...allHeaders) {
    const finalHeaders = new Headers();
    for (const h of allHeaders) {
      if (!h || typeof h !== "object") {
        continue;
      }
      const iterator = h instanceof Headers ? h.entries() : Object.entries(h);
      for (const [k, v] of iterator) {
        if (v === null) {
          finalHeaders.delete(k);
        } else if (Array.isArray(v)) {
          for (const v2 of v) {
            finalHeaders.append(k, v2);
          }
        } else if (v !== void 0) {
          finalHeaders.set(k, v);
        }
      }
    }
    return finalHeaders;
  }
  function removeTrailingSlash(url) {
    if (url.endsWith("/")) {
      return url.substring(0, url.length - 1);
    }
    return url;
  }

  // src/api/client.ts
  var ApiError = class extends Error {
    constructor(status, problem, what) {
      super(describe(status, problem, what));
      this.status = status;
      this.problem = problem;
    }
  };
  function describe(status, p, what) {
    if (!p) return `${what}: HTTP ${status}`;
    let s = `${what}: ${p.title} (${status}): ${p.detail}`;
    if (p.field) s += ` [field ${p.field}]`;
    if (p.quota) s += ` [quota ${p.quota}]`;
    if (p.request_id) s += ` [request ${p.request_id}]`;
    return s;
  }
  var token = "";
  var epoch = 0;
  var Superseded = class extends Error {
  };
  function setToken(t) {
    token = t;
    epoch++;
  }
  function getToken() {
    return token;
  }
  var auth = {
    onRequest({ request }) {
      if (token) request.headers.set("Authorization", `Bearer ${token}`);
      return request;
    }
  };
  var api = createClient({ baseUrl: "" });
  api.use(auth);
  function isProblem(x) {
    return typeof x === "object" && x !== null && "status" in x && "title" in x;
  }
  async function call(what, p) {
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
    return r.data;
  }
  function claims(t) {
    const parts = t.split(".");
    if (parts.length !== 3) return null;
    try {
      let b = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      while (b.length % 4) b += "=";
      const bin = atob(b);
      const bytes = Uint8Array.from(bin, (c2) => c2.charCodeAt(0));
      const c = JSON.parse(new TextDecoder().decode(bytes));
      return typeof c === "object" && c !== null ? c : null;
    } catch {
      return null;
    }
  }

  // src/dom.ts
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === void 0 || v === false) continue;
      e.setAttribute(k, v === true ? "" : String(v));
    }
    append(e, children);
    return e;
  }
  function append(parent, children) {
    for (const c of children) {
      if (c === null || c === void 0 || c === false) continue;
      parent.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  function fill(parent, ...children) {
    parent.replaceChildren();
    append(parent, children);
  }
  function byId(id) {
    const e = document.getElementById(id);
    if (!e) throw new Error(`the page has no #${id}`);
    return e;
  }
  function button(label, testid, onClick, cls = "") {
    const b = el("button", { type: "button", "data-testid": testid, class: cls || void 0 }, label);
    b.addEventListener("click", onClick);
    return b;
  }
  function row(testid, cells, ...extra) {
    const tr = el("tr", { "data-testid": testid });
    for (const c of cells) {
      const td = el("td");
      if (c instanceof Node) td.appendChild(c);
      else td.textContent = c === null || c === void 0 || c === "" ? "-" : String(c);
      tr.appendChild(td);
    }
    for (const x of extra) tr.appendChild(el("td", {}, x));
    return tr;
  }
  function option(value, label, selected2 = false) {
    const o = el("option", { value }, label);
    o.selected = selected2;
    return o;
  }
  function setOptions(sel, opts) {
    const cur = sel.value;
    sel.replaceChildren(...opts.map(([v, l]) => option(v, l, v === cur)));
  }
  function mib(n) {
    return n >= 1024 && n % 1024 === 0 ? `${n / 1024} GiB` : `${n} MiB`;
  }
  function age(secs) {
    if (secs < 0) secs = 0;
    if (secs < 120) return `${Math.floor(secs)} s`;
    if (secs < 7200) return `${Math.floor(secs / 60)} min`;
    return `${Math.floor(secs / 3600)} h`;
  }
  function shortTime(iso) {
    return iso.replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, "");
  }

  // src/errors.ts
  function showError(e) {
    if (e instanceof Superseded) return;
    const msg = e instanceof Error ? e.message : String(e);
    const list2 = byId("errors");
    const li = el("li", { "data-testid": "error", role: "alert" }, el("span", { class: "msg" }, msg));
    li.appendChild(button("Dismiss", "dismiss-error", () => li.remove(), "small"));
    list2.appendChild(li);
  }
  function clearErrors() {
    byId("errors").replaceChildren();
  }
  async function attempt(fn) {
    try {
      await fn();
    } catch (e) {
      showError(e);
    }
  }

  // src/state.ts
  var MAX_EVENTS = 2e3;
  var state = {
    claims: null,
    isAdmin: false,
    vms: /* @__PURE__ */ new Map(),
    requests: /* @__PURE__ */ new Map(),
    nodes: [],
    tenants: [],
    myTenant: null,
    modules: [],
    trust: [],
    events: [],
    eventSeqs: /* @__PURE__ */ new Set()
  };
  var listeners = /* @__PURE__ */ new Map();
  var dirty = /* @__PURE__ */ new Set();
  var scheduled = false;
  function on(topic, fn) {
    const l = listeners.get(topic) ?? [];
    l.push(fn);
    listeners.set(topic, l);
  }
  function changed(topic) {
    dirty.add(topic);
    if (scheduled) return;
    scheduled = true;
    window.setTimeout(flush, 0);
  }
  function flush() {
    scheduled = false;
    const topics = [...dirty];
    dirty.clear();
    const run = /* @__PURE__ */ new Set();
    for (const t of topics) for (const fn of listeners.get(t) ?? []) run.add(fn);
    for (const fn of run) fn();
  }
  function lastSeq() {
    const n = state.events.length;
    return n === 0 ? null : state.events[n - 1].seq;
  }
  function addEvents(evs) {
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
  function putVm(vm) {
    state.vms.set(vm.id, vm);
    changed("vms");
  }
  function dropVm(id) {
    state.vms.delete(id);
    state.requests.delete(id);
    changed("vms");
    changed("requests");
  }
  function setRequests(vmId, items) {
    state.requests.set(vmId, items);
    changed("requests");
  }
  function clear() {
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
    for (const t of ["session", "vms", "requests", "nodes", "tenants", "modules", "trust", "events"]) changed(t);
  }

  // src/stream.ts
  var SseParser = class {
    constructor(emit) {
      this.emit = emit;
      this.buf = "";
      this.event = "";
      this.data = [];
      this.id = null;
    }
    push(chunk) {
      this.buf += chunk;
      for (; ; ) {
        const m = /\r\n|\r|\n/.exec(this.buf);
        if (!m) break;
        if (m[0] === "\r" && m.index === this.buf.length - 1) break;
        const line = this.buf.slice(0, m.index);
        this.buf = this.buf.slice(m.index + m[0].length);
        this.line(line);
      }
    }
    line(line) {
      if (line === "") {
        if (this.data.length > 0) {
          this.emit({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
        }
        this.event = "";
        this.data = [];
        return;
      }
      if (line.startsWith(":")) return;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id") this.id = value;
    }
  };
  var MIN_BACKOFF_MS = 1e3;
  var MAX_BACKOFF_MS = 3e4;
  var LiveStream = class {
    constructor(h) {
      this.h = h;
      this.ctl = null;
      this.timer = null;
      this.backoff = MIN_BACKOFF_MS;
      this.connects = 0;
      this.stopped = false;
    }
    start() {
      this.stopped = false;
      void this.run();
    }
    stop() {
      this.stopped = true;
      if (this.timer !== null) window.clearTimeout(this.timer);
      this.timer = null;
      this.ctl?.abort();
      this.ctl = null;
    }
    retry(why) {
      if (this.stopped) return;
      const wait = this.backoff;
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      this.h.down(why, wait);
      this.timer = window.setTimeout(() => {
        this.timer = null;
        void this.run();
      }, wait);
    }
    async run() {
      if (this.stopped) return;
      const ctl = new AbortController();
      this.ctl = ctl;
      const after = this.h.afterSeq();
      const url = after === null ? "/v1/stream" : `/v1/stream?after_seq=${after}`;
      let resp;
      try {
        resp = await fetch(url, {
          headers: { Authorization: `Bearer ${getToken()}`, Accept: "text/event-stream" },
          signal: ctl.signal,
          cache: "no-store"
        });
      } catch (e) {
        if (!ctl.signal.aborted) this.retry(`the stream could not connect (${String(e)})`);
        return;
      }
      if (resp.status === 401 || resp.status === 403 || resp.status === 404) {
        await resp.body?.cancel();
        this.h.down(
          resp.status === 404 ? "this control plane has no live stream (404)" : `the stream was refused (${resp.status})`,
          null
        );
        return;
      }
      if (!resp.ok || !resp.body) {
        await resp.body?.cancel();
        this.retry(`the stream answered ${resp.status}`);
        return;
      }
      this.h.connected(this.connects > 0);
      this.connects++;
      const parser = new SseParser((f) => {
        this.backoff = MIN_BACKOFF_MS;
        this.h.frame(f);
      });
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (; ; ) {
          const { done, value } = await reader.read();
          if (done) break;
          parser.push(value);
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        this.retry(`the stream broke (${String(e)})`);
        return;
      }
      if (!ctl.signal.aborted) this.retry("the stream ended");
    }
  };

  // src/views/events.ts
  var SHOWN = 300;
  function matches(e, q, outcome) {
    if (outcome && e.outcome !== outcome) return false;
    if (!q) return true;
    return [e.action, e.actor, e.resource, e.tenant ?? "", e.detail ?? ""].some((s) => s.toLowerCase().includes(q));
  }
  function render() {
    const q = byId("events-filter").value.trim().toLowerCase();
    const outcome = byId("events-outcome").value;
    const hits = [];
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
        e.detail
      ]);
      tr.dataset.action = e.action;
      tr.dataset.resource = e.resource;
      tr.dataset.actor = e.actor;
      return tr;
    });
    fill(byId("events-body"), ...rows);
    byId("events-count").textContent = `${state.events.length} events kept, ${rows.length} shown`;
  }
  async function loadEvents() {
    let pageToken;
    for (let i = 0; i < 200; i++) {
      const page2 = await call(
        "list events",
        api.GET("/v1/events", { params: { query: pageToken ? { limit: 1e3, page_token: pageToken } : { limit: 1e3 } } })
      );
      addEvents(page2.items);
      if (!page2.next_page_token) break;
      pageToken = page2.next_page_token;
    }
  }
  function initEvents() {
    on("events", render);
    byId("events-filter").addEventListener("input", render);
    byId("events-outcome").addEventListener("change", render);
  }
  function resetEvents() {
    byId("events-filter").value = "";
    byId("events-outcome").value = "";
  }

  // src/views/modules.ts
  var PAGE = 50;
  var page = 0;
  function info(m, key) {
    for (const v of m.versions) if (v.modinfo[key]) return v.modinfo[key];
    return "";
  }
  function policyText(m) {
    const p = m.policy;
    if (!p || !p.approved) return "not approved";
    const who = p.tenants.includes("*") ? "all tenants" : p.tenants.length ? p.tenants.join(", ") : "no tenant";
    const signers = p.signers && !(p.signers.length === 1 && p.signers[0] === "kernel") ? `; signed by ${p.signers.join(", ")}` : "";
    const licenses = p.licenses && p.licenses.length ? `; also ${p.licenses.join(", ")}` : "";
    return who + signers + licenses;
  }
  function commaList(id) {
    return byId(id).value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  }
  function matches2(m) {
    const release = byId("module-release").value;
    if (release && !m.versions.some((v) => v.kernel_release === release)) return false;
    if (state.isAdmin && byId("module-approved-only").checked && !m.policy?.approved) return false;
    const q = byId("module-search").value.trim().toLowerCase();
    if (!q) return true;
    return [m.name, info(m, "description"), info(m, "license"), info(m, "alias")].some((s) => s.toLowerCase().includes(q));
  }
  function releases() {
    const s = /* @__PURE__ */ new Set();
    for (const m of state.modules) for (const v of m.versions) s.add(v.kernel_release);
    return [...s].sort().reverse();
  }
  function render2() {
    setOptions(byId("module-release"), [["", "any"], ...releases().map((r) => [r, r])]);
    const shown2 = state.modules.filter(matches2);
    const pages = Math.max(1, Math.ceil(shown2.length / PAGE));
    if (page >= pages) page = pages - 1;
    const slice = shown2.slice(page * PAGE, (page + 1) * PAGE);
    const rows = slice.map((m) => {
      const cells = [
        m.name,
        m.versions.map((v) => v.kernel_release).join(", "),
        m.versions.map((v) => `${Math.ceil(v.size / 1024)} KiB`).join(", "),
        info(m, "license"),
        info(m, "description")
      ];
      const tr = state.isAdmin ? row("module-row", [...cells, policyText(m)], button("Policy", "module-edit-policy", () => editPolicy(m))) : row("module-row", cells);
      tr.dataset.module = m.name;
      return tr;
    });
    fill(byId("modules-body"), ...rows);
    byId("module-count").textContent = `${shown2.length} of ${state.modules.length} modules`;
    byId("module-page").textContent = `page ${page + 1} of ${pages}`;
    byId("module-prev").disabled = page === 0;
    byId("module-next").disabled = page >= pages - 1;
  }
  var editing = null;
  function editPolicy(m) {
    editing = m.name;
    byId("policy-module").textContent = m.name;
    byId("policy-approved").checked = m.policy?.approved ?? false;
    byId("policy-tenants").value = (m.policy?.tenants ?? []).join(", ");
    byId("policy-signers").value = (m.policy?.signers ?? ["kernel"]).join(", ");
    byId("policy-licenses").value = (m.policy?.licenses ?? []).join(", ");
    byId("policy-form").hidden = false;
    byId("policy-form").scrollIntoView({ block: "nearest" });
    byId("policy-approved").focus();
  }
  async function savePolicy() {
    if (!editing) return;
    const name = editing;
    const approved = byId("policy-approved").checked;
    const tenants = commaList("policy-tenants");
    const signers = commaList("policy-signers");
    const licenses = commaList("policy-licenses");
    const policy = await call(
      `set the policy of ${name}`,
      api.PUT("/v1/admin/modules/{name}/policy", { params: { path: { name } }, body: { approved, tenants, signers, licenses } })
    );
    state.modules = state.modules.map((m) => m.name === name ? { ...m, policy } : m);
    changed("modules");
    editing = null;
    byId("policy-form").hidden = true;
  }
  async function publish() {
    const name = byId("publish-name").value.trim();
    const release = byId("publish-release").value.trim();
    const file = byId("publish-file").files?.[0];
    if (!file) throw new Error("publish: choose a .ko file");
    const force = byId("publish-force").checked;
    const bytes = new Uint8Array(await file.arrayBuffer());
    await call(
      `publish ${name} for ${release}`,
      api.PUT("/v1/admin/modules/{name}", {
        params: { path: { name }, query: force ? { kernel_release: release, force: true } : { kernel_release: release } },
        // The document types the body as an array of bytes; it is sent as they are.
        body: bytes,
        bodySerializer: (b) => b,
        headers: { "Content-Type": "application/octet-stream" }
      })
    );
    byId("publish-form").reset();
    await loadModules();
  }
  async function loadModules() {
    state.modules = await call("list modules", api.GET("/v1/modules"));
    changed("modules");
  }
  var refetch = null;
  function modulesMayHaveChanged() {
    if (refetch !== null) return;
    refetch = window.setTimeout(() => {
      refetch = null;
      if (state.claims) void attempt(loadModules);
    }, 500);
  }
  function initModules() {
    on("modules", render2);
    on("session", render2);
    const again = () => {
      page = 0;
      render2();
    };
    byId("module-search").addEventListener("input", again);
    byId("module-release").addEventListener("change", again);
    byId("module-approved-only").addEventListener("change", again);
    byId("module-prev").addEventListener("click", () => {
      page = Math.max(0, page - 1);
      render2();
    });
    byId("module-next").addEventListener("click", () => {
      page++;
      render2();
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
  function resetModules() {
    page = 0;
    editing = null;
    byId("policy-form").hidden = true;
    byId("policy-module").textContent = "";
    byId("module-search").value = "";
    if (refetch !== null) window.clearTimeout(refetch);
    refetch = null;
  }

  // src/views/trust.ts
  function render3() {
    const rows = state.trust.map((t) => {
      const usedBy = t.used_by ?? [];
      const remove2 = button("Remove", "trust-remove", () => void attempt(() => removeTrusted(t.name)), "danger");
      remove2.disabled = usedBy.length > 0;
      remove2.title = usedBy.length ? `named by the policy of ${usedBy.join(", ")}` : "";
      const tr = row(
        "trust-row",
        [t.name, t.subject, t.key, t.sha256.slice(0, 16), usedBy.length ? usedBy.join(", ") : "-", shortTime(t.added_at)],
        remove2
      );
      tr.dataset.trust = t.name;
      return tr;
    });
    fill(byId("trust-body"), ...rows);
  }
  async function loadTrust() {
    if (!state.isAdmin) return;
    state.trust = await call("list trusted certificates", api.GET("/v1/admin/trust"));
    changed("trust");
  }
  async function addTrusted() {
    const name = byId("trust-name").value.trim();
    const certificate_pem = byId("trust-pem").value.trim() + "\n";
    await call(`trust ${name}`, api.PUT("/v1/admin/trust/{name}", { params: { path: { name } }, body: { certificate_pem } }));
    byId("trust-form").reset();
    await loadTrust();
  }
  async function removeTrusted(name) {
    if (!window.confirm(`Remove the certificate ${name} from the trust store?`)) return;
    const r = await api.DELETE("/v1/admin/trust/{name}", { params: { path: { name } } });
    if (r.response.status !== 204) await call(`remove ${name}`, Promise.resolve(r));
    await loadTrust();
  }
  function initTrust() {
    on("trust", render3);
    byId("trust-form").addEventListener("submit", (e) => {
      e.preventDefault();
      void attempt(addTrusted);
    });
  }
  function resetTrust() {
    byId("trust-form").reset();
  }

  // src/views/nodes.ts
  var readAt = 0;
  function nodesRead() {
    readAt = Date.now() / 1e3;
  }
  function clock(unix) {
    return new Date(unix * 1e3).toISOString().slice(11, 19);
  }
  async function act(name, action) {
    if (action === "drain" && !window.confirm(`Drain ${name}? Its VMs are placed elsewhere.`)) return;
    const node = await call(
      `${action} ${name}`,
      api.POST("/v1/nodes/{name}/{action}", { params: { path: { name, action } } })
    );
    state.nodes = state.nodes.map((n) => n.name === node.name ? node : n);
    nodesRead();
    changed("nodes");
  }
  function render4() {
    const body = byId("nodes-body");
    const rows = [...state.nodes].sort((a, b) => a.name.localeCompare(b.name)).map((n) => {
      const actions = el("span", { class: "actions" });
      if (n.cordoned) actions.appendChild(button("Uncordon", "node-uncordon", () => void attempt(() => act(n.name, "uncordon"))));
      else actions.appendChild(button("Cordon", "node-cordon", () => void attempt(() => act(n.name, "cordon"))));
      actions.appendChild(button("Drain", "node-drain", () => void attempt(() => act(n.name, "drain"))));
      const hb = el(
        "span",
        { "data-testid": "node-heartbeat", title: n.last_heartbeat },
        `${age(readAt - n.last_heartbeat_unix)} (read at ${clock(readAt)} UTC)`
      );
      const tr = row(
        "node-row",
        [
          n.name,
          el("span", { class: `state-${n.state}` }, n.state),
          n.cordoned ? "yes" : "no",
          `${n.driver}${n.hardware_virtualization ? " (KVM)" : " (TCG)"}`,
          n.kernel_release,
          `${n.capacity.vcpus} vCPU, ${mib(n.capacity.memory_mib)}`,
          `${n.allocated.vcpus} vCPU, ${mib(n.allocated.memory_mib)}`,
          hb
        ],
        actions
      );
      tr.dataset.node = n.name;
      return tr;
    });
    fill(body, ...rows);
  }
  async function loadNodes() {
    state.nodes = await call("list nodes", api.GET("/v1/nodes"));
    nodesRead();
    changed("nodes");
  }
  function initNodes() {
    on("nodes", render4);
    byId("nodes-refresh").addEventListener("click", () => void attempt(loadNodes));
  }

  // src/views/requests.ts
  function render5() {
    const rows = [];
    for (const [vmId, reqs] of state.requests) {
      const vm = state.vms.get(vmId);
      for (const r of reqs) {
        const tr = row("module-request-row", [
          vm ? vm.spec.name : vmId,
          vm?.tenant,
          r.name,
          el("span", { class: `req req-${r.state}` }, r.state),
          r.want_loaded ? "load" : "unload",
          r.reason,
          shortTime(r.updated_at)
        ]);
        tr.dataset.module = r.name;
        tr.dataset.state = r.state;
        rows.push(tr);
      }
    }
    rows.sort((a, b) => (a.textContent ?? "").localeCompare(b.textContent ?? ""));
    fill(byId("requests-body"), ...rows);
  }
  function initRequests() {
    on("requests", render5);
    on("vms", render5);
  }

  // src/views/tenants.ts
  function used(u, max, fmt = String) {
    return `${fmt(u)} / ${fmt(max)}`;
  }
  function renderAll() {
    const rows = [...state.tenants].sort((a, b) => a.name.localeCompare(b.name)).map((t) => {
      const tr = row(
        "tenant-row",
        [
          t.name,
          used(t.usage.vms, t.quota.max_vms),
          used(t.usage.vcpus, t.quota.max_vcpus),
          used(t.usage.memory_mib, t.quota.max_memory_mib, mib),
          used(t.usage.networks ?? 0, t.quota.max_networks ?? 0),
          `${t.quota.api_requests_per_sec ?? "-"}/s (burst ${t.quota.api_burst ?? "-"})`,
          shortTime(t.created_at)
        ],
        button("Edit quota", "tenant-edit-quota", () => editQuota(t))
      );
      tr.dataset.tenant = t.name;
      return tr;
    });
    fill(byId("tenants-body"), ...rows);
  }
  function renderMine() {
    const t = state.myTenant;
    if (!t) {
      fill(byId("quota-body"));
      return;
    }
    const line = (what, u, max, fmt = String) => {
      const pct = max > 0 ? Math.min(100, Math.round(u * 100 / max)) : 100;
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
      line("networks", t.usage.networks ?? 0, t.quota.max_networks ?? 0)
    );
  }
  function num(id) {
    return Number(byId(id).value);
  }
  var editing2 = null;
  function editQuota(t) {
    editing2 = t;
    byId("quota-tenant").textContent = t.name;
    byId("quota-vms").value = String(t.quota.max_vms);
    byId("quota-vcpus").value = String(t.quota.max_vcpus);
    byId("quota-memory").value = String(t.quota.max_memory_mib);
    byId("quota-networks").value = String(t.quota.max_networks ?? 8);
    byId("quota-form").hidden = false;
  }
  async function saveQuota() {
    if (!editing2) return;
    const name = editing2.name;
    const quota = {
      ...editing2.quota,
      max_vms: num("quota-vms"),
      max_vcpus: num("quota-vcpus"),
      max_memory_mib: num("quota-memory"),
      max_networks: num("quota-networks")
    };
    const t = await call(
      `set the quota of ${name}`,
      api.PUT("/v1/tenants/{name}/quota", { params: { path: { name } }, body: quota })
    );
    state.tenants = state.tenants.map((x) => x.name === t.name ? t : x);
    changed("tenants");
    editing2 = null;
    byId("quota-form").hidden = true;
  }
  async function createTenant() {
    const name = byId("tenant-name").value.trim();
    const quota = { max_vms: num("tenant-vms"), max_vcpus: num("tenant-vcpus"), max_memory_mib: num("tenant-memory") };
    const t = await call(`create tenant ${name}`, api.POST("/v1/tenants", { body: { name, quota } }));
    state.tenants = [...state.tenants.filter((x) => x.name !== t.name), t];
    changed("tenants");
    byId("create-tenant").reset();
  }
  async function loadTenants() {
    if (state.isAdmin) {
      state.tenants = await call("list tenants", api.GET("/v1/tenants"));
    } else if (state.claims?.tenant) {
      const name = state.claims.tenant;
      state.myTenant = await call(`read tenant ${name}`, api.GET("/v1/tenants/{name}", { params: { path: { name } } }));
    }
    changed("tenants");
  }
  var refetch2 = null;
  function tenantsMayHaveChanged() {
    if (refetch2 !== null) return;
    refetch2 = window.setTimeout(() => {
      refetch2 = null;
      if (state.claims) void attempt(loadTenants);
    }, 500);
  }
  function initTenants() {
    on("tenants", () => {
      renderAll();
      renderMine();
    });
    byId("quota-form").addEventListener("submit", (e) => {
      e.preventDefault();
      void attempt(saveQuota);
    });
    byId("quota-cancel").addEventListener("click", () => {
      editing2 = null;
      byId("quota-form").hidden = true;
    });
    byId("create-tenant").addEventListener("submit", (e) => {
      e.preventDefault();
      void attempt(createTenant);
    });
  }
  function resetTenants() {
    editing2 = null;
    byId("quota-form").hidden = true;
    byId("quota-tenant").textContent = "";
    if (refetch2 !== null) window.clearTimeout(refetch2);
    refetch2 = null;
  }

  // src/views/vms.ts
  var PHASES = ["Pending", "Scheduled", "Starting", "Running", "Stopping", "Stopped", "Failed", "Lost"];
  var selected = null;
  function sortedVms() {
    return [...state.vms.values()].sort(
      (a, b) => a.tenant.localeCompare(b.tenant) || a.spec.name.localeCompare(b.spec.name)
    );
  }
  function requestsText(id) {
    const reqs = state.requests.get(id) ?? [];
    return reqs.map((r) => `${r.name}: ${r.state}${r.want_loaded ? "" : " (unload)"}`).join(", ");
  }
  function renderFilters() {
    const vms = [...state.vms.values()];
    const tenants = /* @__PURE__ */ new Set([...state.tenants.map((t) => t.name), ...vms.map((v) => v.tenant)]);
    const nodes = /* @__PURE__ */ new Set([...state.nodes.map((n) => n.name), ...vms.flatMap((v) => v.status.node ? [v.status.node] : [])]);
    const opts = (xs) => [["", "any"], ...[...xs].sort().map((x) => [x, x])];
    setOptions(byId("vm-filter-tenant"), opts(tenants));
    setOptions(byId("vm-filter-phase"), opts(PHASES));
    setOptions(byId("vm-filter-node"), opts(nodes));
  }
  function shown(vm) {
    const t = byId("vm-filter-tenant").value;
    const p = byId("vm-filter-phase").value;
    const n = byId("vm-filter-node").value;
    return (!t || vm.tenant === t) && (!p || vm.status.phase === p) && (!n || vm.status.node === n);
  }
  function power(vm) {
    return vm.spec.power_state ?? "running";
  }
  function render6() {
    renderFilters();
    const rows = sortedVms().filter(shown).map((vm) => {
      const actions = el("span", { class: "actions" });
      actions.appendChild(button("Details", "vm-details", () => select(vm.id)));
      if (!state.isAdmin && !vm.deleting) {
        const running = power(vm) === "running";
        actions.appendChild(
          button(running ? "Stop" : "Start", "vm-power", () => void attempt(() => setPower(vm.id, running ? "stopped" : "running")))
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
          vm.status.reason
        ],
        actions
      );
      tr.dataset.vm = vm.spec.name;
      tr.dataset.vmId = vm.id;
      if (vm.id === selected) tr.classList.add("selected");
      return tr;
    });
    fill(byId("vms-body"), ...rows);
    renderDetail();
  }
  function list(items) {
    return items && items.length ? items.join(", ") : "-";
  }
  function requestRow(vmId, r) {
    const unloadButton = !state.isAdmin && r.want_loaded ? button("Unload", "request-unload", () => void attempt(() => unload(vmId, r.name))) : el("span");
    const tr = row(
      "request-row",
      [r.name, el("span", { class: `req req-${r.state}`, "data-testid": "request-state" }, r.state), r.want_loaded ? "load" : "unload", r.reason, shortTime(r.updated_at)],
      unloadButton
    );
    tr.dataset.module = r.name;
    tr.dataset.state = r.state;
    return tr;
  }
  function renderDetail() {
    const panel = byId("vm-detail");
    const vm = selected ? state.vms.get(selected) : void 0;
    if (!vm) {
      panel.hidden = true;
      delete panel.dataset.vmId;
      fill(panel);
      return;
    }
    panel.hidden = false;
    let info2 = panel.querySelector(".info");
    let form = panel.querySelector("form");
    if (!info2 || !form || panel.dataset.vmId !== vm.id) {
      panel.dataset.vmId = vm.id;
      info2 = el("div", { class: "info" });
      form = requestForm(vm.id);
      fill(panel, info2, form);
    }
    const s = vm.status;
    const dl = el("dl");
    const item = (k, v) => dl.append(el("dt", {}, k), el("dd", { "data-testid": `vm-detail-${k.replace(/ /g, "-")}` }, v === null || v === void 0 || v === "" ? "-" : String(v)));
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
      el("thead", {}, el("tr", {}, ...["module", "state", "wanted", "reason", "updated", ""].map((h) => el("th", {}, h))))
    );
    const tbody = el("tbody");
    tbody.append(...reqs.map((r) => requestRow(vm.id, r)));
    table.appendChild(tbody);
    fill(
      info2,
      el("h3", {}, `VM ${vm.spec.name}`, " ", button("Close", "vm-detail-close", () => select(null), "small")),
      dl,
      el("h4", {}, "Module requests"),
      table
    );
    form.hidden = state.isAdmin || !!vm.deleting;
    const sel = form.querySelector("select");
    if (sel) setOptions(sel, requestable().map((m) => [m, m]));
  }
  function requestable() {
    return state.modules.filter((m) => state.isAdmin || !m.policy || m.policy.approved).map((m) => m.name).sort();
  }
  function requestForm(vmId) {
    const sel = el("select", { "data-testid": "request-module-name" });
    const form = el("form", { class: "inline", "data-testid": "request-module" }, el("label", {}, "module ", sel), el("button", { type: "submit", "data-testid": "request-module-submit" }, "Request module"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void attempt(() => requestModule(vmId, sel.value));
    });
    return form;
  }
  function select(id) {
    selected = id;
    if (id) void attempt(() => loadRequests(id));
    changed("vms");
  }
  async function loadRequests(id) {
    const items = await call("list module requests", api.GET("/v1/vms/{id}/modules", { params: { path: { id } } }));
    if (state.vms.has(id)) setRequests(id, items);
  }
  async function requestModule(id, name) {
    if (!name) throw new Error("request a module: choose one");
    await call(`request ${name}`, api.POST("/v1/vms/{id}/modules", { params: { path: { id } }, body: { name } }));
    await loadRequests(id);
  }
  async function unload(id, name) {
    await call(`unload ${name}`, api.DELETE("/v1/vms/{id}/modules/{name}", { params: { path: { id, name } } }));
    await loadRequests(id);
  }
  async function setPower(id, to) {
    const vm = await call("read the VM", api.GET("/v1/vms/{id}", { params: { path: { id } } }));
    const spec = { ...vm.spec, power_state: to };
    const updated = await call(
      `power ${to === "running" ? "on" : "off"} ${vm.spec.name}`,
      api.PUT("/v1/vms/{id}", { params: { path: { id }, header: { "If-Match": `"${vm.generation}"` } }, body: spec })
    );
    putVm(updated);
  }
  async function remove(id) {
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
  async function create() {
    const name = byId("vm-name").value.trim();
    const mods = [...byId("vm-modules").selectedOptions].map((o) => ({ name: o.value }));
    const body = {
      name,
      vcpus: Number(byId("vm-vcpus").value),
      memory_mib: Number(byId("vm-memory").value),
      power_state: byId("vm-power").value,
      modules: mods,
      kernel_mode: byId("vm-kernel-mode").value
    };
    const vm = await call(`create VM ${name}`, api.POST("/v1/vms", { body }));
    putVm(vm);
    tenantsMayHaveChanged();
    byId("vm-name").value = "";
    for (const o of byId("vm-modules").options) o.selected = false;
    select(vm.id);
  }
  function renderCreateForm() {
    const sel = byId("vm-modules");
    const chosen = new Set([...sel.selectedOptions].map((o) => o.value));
    sel.replaceChildren(...requestable().map((m) => option(m, m, chosen.has(m))));
  }
  async function loadVms() {
    const all = [];
    let pageToken;
    for (let i = 0; i < 100; i++) {
      const page2 = await call(
        "list VMs",
        api.GET("/v1/vms", { params: { query: pageToken ? { limit: 1e3, page_token: pageToken } : { limit: 1e3 } } })
      );
      all.push(...page2.items);
      if (!page2.next_page_token) break;
      pageToken = page2.next_page_token;
    }
    state.vms.clear();
    for (const vm of all) state.vms.set(vm.id, vm);
    for (const id of [...state.requests.keys()]) if (!state.vms.has(id)) state.requests.delete(id);
    changed("vms");
    changed("requests");
  }
  async function loadAllRequests() {
    for (const id of [...state.vms.keys()].slice(0, 200)) await loadRequests(id);
  }
  function initVms() {
    on("vms", render6);
    on("requests", render6);
    on("nodes", renderFilters);
    on("tenants", renderFilters);
    on("modules", () => {
      renderCreateForm();
      renderDetail();
    });
    for (const id of ["vm-filter-tenant", "vm-filter-phase", "vm-filter-node"]) byId(id).addEventListener("change", render6);
    byId("create-vm").addEventListener("submit", (e) => {
      e.preventDefault();
      void attempt(create);
    });
  }
  function resetVms() {
    selected = null;
    fill(byId("vm-detail"));
    delete byId("vm-detail").dataset.vmId;
    byId("vm-detail").hidden = true;
    byId("create-vm").reset();
  }

  // src/main.ts
  var STORAGE_KEY = "modvisor-token";
  var stream = null;
  function setLive(text, cls) {
    const l = byId("live");
    l.textContent = text;
    l.className = `live ${cls}`;
  }
  function showTab(tab) {
    for (const b of document.querySelectorAll("#tabs button")) {
      b.classList.toggle("active", b.dataset.tab === tab);
    }
    for (const s of document.querySelectorAll("main > section.view")) {
      s.hidden = s.id !== `view-${tab}`;
    }
  }
  function onFrame(f) {
    let data;
    try {
      data = JSON.parse(f.data);
    } catch {
      showError(`live stream: a "${f.event}" frame that is not JSON`);
      return;
    }
    switch (f.event) {
      case "audit": {
        const e = data;
        addEvents([e]);
        if (e.action.startsWith("module.")) modulesMayHaveChanged();
        if (e.action.startsWith("trust.") || e.action === "module.set_policy") void attempt(loadTrust);
        if (e.action.startsWith("tenant.")) tenantsMayHaveChanged();
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
        const vm = data;
        const old = state.vms.get(vm.id);
        putVm(vm);
        if (!old || old.spec.vcpus !== vm.spec.vcpus || old.spec.memory_mib !== vm.spec.memory_mib) tenantsMayHaveChanged();
        break;
      }
      case "vm_deleted":
        dropVm(data.id);
        tenantsMayHaveChanged();
        break;
      case "module_requests": {
        const m = data;
        setRequests(m.vm_id, m.items);
        break;
      }
      case "nodes":
        state.nodes = data;
        nodesRead();
        changed("nodes");
        break;
      default:
        break;
    }
  }
  function startStream() {
    stream?.stop();
    stream = new LiveStream({
      frame: onFrame,
      afterSeq: lastSeq,
      connected(again) {
        setLive("live", "on");
        if (again) void attempt(loadVms);
      },
      down(why, retryInMs) {
        if (retryInMs === null) {
          setLive(`no live updates: ${why}`, "off");
          if (why.includes("404")) void attempt(loadAllRequests);
          else showError(`Live updates stopped: ${why}`);
        } else {
          setLive(`reconnecting in ${Math.round(retryInMs / 1e3)} s (${why})`, "wait");
        }
      }
    });
    stream.start();
  }
  async function signIn(raw) {
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
    try {
      await loadVms();
    } catch (e) {
      forget(false);
      throw new Error(`The control plane refused this token. ${e instanceof Error ? e.message : String(e)}`);
    }
    sessionStorage.setItem(STORAGE_KEY, tok);
    byId("token").value = "";
    const who = c.role === "admin" ? `admin (${c.sub ?? "?"})` : `tenant ${c.tenant ?? "?"} (${c.sub ?? "?"})`;
    const expires = typeof c.exp === "number" ? `, token expires ${shortTime(new Date(c.exp * 1e3).toISOString())} UTC` : "";
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
  function forget(clearMessages) {
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
  function init() {
    initNodes();
    initTenants();
    initModules();
    initTrust();
    initVms();
    initRequests();
    initEvents();
    for (const b of document.querySelectorAll("#tabs button")) {
      b.addEventListener("click", () => showTab(b.dataset.tab ?? "vms"));
    }
    byId("use-token").addEventListener("click", () => void attempt(() => signIn(byId("token").value)));
    byId("forget-token").addEventListener("click", () => {
      forget(true);
      byId("token").value = "";
    });
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (saved) void attempt(() => signIn(saved));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
