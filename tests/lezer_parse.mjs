// Parses LogQL and TraceQL with Grafana's own Lezer grammars (@grafana/lezer-logql,
// @grafana/lezer-traceql), as Grafana's query editors do.
//
// usage: node tests/lezer_parse.mjs <dir holding node_modules>  < queries.json
// stdin:  [{"lang": "logql" | "traceql", "expr": "..."}, ...]
// stdout: [{"ok": bool, "errors": [offset, ...], "nodes": [[type, text], ...]}, ...]
// A syntax error shows up as an error node ("⚠") in the tree; "nodes" lists every named
// node with its source text, so that the caller can check label and attribute names.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const base = process.argv[2];
if (!base) {
  console.error("usage: node lezer_parse.mjs <dir holding node_modules>");
  process.exit(2);
}
const require = createRequire(join(resolve(base), "node_modules", "index.js"));
const parsers = {
  logql: require("@grafana/lezer-logql").parser,
  traceql: require("@grafana/lezer-traceql").parser,
};

const queries = JSON.parse(readFileSync(0, "utf8"));
const results = queries.map(({ lang, expr }) => {
  const parser = parsers[lang];
  if (!parser) {
    return { ok: false, errors: [-1], nodes: [], message: `unknown language ${lang}` };
  }
  const tree = parser.parse(expr);
  const errors = [];
  const nodes = [];
  tree.iterate({
    enter(node) {
      if (node.type.isError) {
        errors.push(node.from);
      } else if (node.name) {
        nodes.push([node.name, expr.slice(node.from, node.to)]);
      }
    },
  });
  return { ok: errors.length === 0, errors, nodes };
});
process.stdout.write(JSON.stringify(results));
