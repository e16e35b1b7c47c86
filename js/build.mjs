// Bundles the widget's front end, Yjs included, into one ES module that anywidget loads.
// Usage: node build.mjs [outfile]   (default: ../jupyter_rooms/static/widget.js)
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const outfile = process.argv[2] ?? `${here}../jupyter_rooms/static/widget.js`;

await build({
  absWorkingDir: here,
  entryPoints: ["src/index.js"],
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  legalComments: "eof",
  charset: "utf8",
  loader: { ".css": "text" },
  outfile,
  logLevel: "warning",
});
