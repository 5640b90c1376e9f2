// Parse Mermaid diagrams with Mermaid itself (the npm `mermaid` package, in a DOM from jsdom), for
// tests/test_chart.py:  node tests/mermaid_parse.mjs NODE_MODULES < diagrams.json
// stdin: a JSON list of diagram texts; stdout: a JSON list, per diagram {ok, error} and, for an xychart,
// what Mermaid read: title, x-axis categories, y-axis range and each plot's values.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.argv[2];
let mermaid, pkg;
try {  // exit 3: this node cannot load the packages (too old, a broken install): the tests skip and say so
  const require = createRequire(join(modules, 'noop.js'));
  const { JSDOM } = require('jsdom');
  const dom = new JSDOM('<!doctype html><html><body></body></html>');
  globalThis.window = dom.window;
  globalThis.document = dom.window.document;
  pkg = JSON.parse(readFileSync(join(modules, 'mermaid', 'package.json'), 'utf8'));
  ({ default: mermaid } = await import(pathToFileURL(join(modules, 'mermaid', pkg.module)).href));
} catch (e) {
  process.stderr.write(`node ${process.version} cannot load mermaid and jsdom from ${modules}: ${e.message}\n`);
  process.exit(3);
}

const texts = JSON.parse(readFileSync(0, 'utf8'));
const results = [];
for (const text of texts) {
  try {
    const parsed = await mermaid.parse(text);
    const result = { ok: true, type: parsed.diagramType, version: pkg.version };
    if (parsed.diagramType === 'xychart') {
      const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
      const data = diagram.db.getXYChartData();
      Object.assign(result, {
        title: diagram.db.getDiagramTitle(),
        categories: data.xAxis.categories,
        y: [data.yAxis.min, data.yAxis.max],
        plots: data.plots.map((p) => ({ type: p.type, values: p.data.map((d) => d[1]) })),
        palette: diagram.db.getChartThemeConfig().plotColorPalette,
      });
    }
    results.push(result);
  } catch (e) {
    results.push({ ok: false, error: String(e.message || e).split('\n').slice(0, 4).join(' | ') });
  }
}
process.stdout.write(JSON.stringify(results));
