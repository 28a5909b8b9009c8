// Bundles src/main.ts into control-plane/src/api/dashboard/app.js, the file the control
// plane serves (include_str!). Deterministic: no timestamps, no absolute paths, no
// legal-comment files, no source map; the same sources give the same bytes.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");

await build({
  absWorkingDir: root,
  entryPoints: ["src/main.ts"],
  outfile: "../control-plane/src/api/dashboard/app.js",
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2020"],
  charset: "utf8",
  legalComments: "none",
  sourcemap: false,
  minify: false,
  treeShaking: true,
  banner: {
    js: "// The modvisor console, built from dashboard/src by `cd dashboard && npm ci && npm run build`.\n// Do not edit: CI rebuilds it and fails when the bytes differ.",
  },
  logLevel: "warning",
});
