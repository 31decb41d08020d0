// Bundles the storefront into dist/: app.js (minified), index.html and
// styles.css, and reports the bundle's gzipped size.

import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const LIMIT = 150 * 1024;

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: "dist/app.js",
  legalComments: "none",
});
for (const file of ["index.html", "styles.css"]) copyFileSync(file, `dist/${file}`);
const gzipped = gzipSync(readFileSync("dist/app.js")).length;
console.log(`dist/app.js: ${(gzipped / 1024).toFixed(1)} kB gzipped (limit ${LIMIT / 1024} kB)`);
if (gzipped > LIMIT) {
  console.error("the bundle is over its limit");
  process.exit(1);
}
