// For developing the dashboard without rebuilding modvisor: serves the three dashboard
// files from control-plane/src/api/dashboard (as the control plane does, with the same
// headers) and passes every other request, streams included, to a running control plane.
// Usage: node scripts/dev-proxy.mjs http://127.0.0.1:7070 [port, default 7080]
import { createServer, request } from "node:http";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const upstream = new URL(process.argv[2] ?? "http://127.0.0.1:7070");
const port = Number(process.argv[3] ?? 7080);
const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../control-plane/src/api/dashboard");
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'";
const files = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/dashboard/app.js": ["app.js", "text/javascript; charset=utf-8"],
  "/dashboard/style.css": ["style.css", "text/css; charset=utf-8"],
};

const server = createServer((req, res) => {
  const f = req.method === "GET" ? files[req.url ?? ""] : undefined;
  if (f) {
    res.writeHead(200, {
      "Content-Type": f[1],
      "Content-Security-Policy": CSP,
      "X-Content-Type-Options": "nosniff",
      "Cache-Control": "no-cache",
    });
    res.end(readFileSync(path.join(dir, f[0])));
    return;
  }
  const up = request(
    { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
    (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    },
  );
  up.on("error", (e) => {
    res.writeHead(502, { "Content-Type": "text/plain" });
    res.end(String(e));
  });
  req.pipe(up);
});
server.listen(port, "127.0.0.1", () => console.log(`dashboard dev proxy on http://127.0.0.1:${port} -> ${upstream.href}`));
