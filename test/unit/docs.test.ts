import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildOpenApiDocument } from '../../src/api/openapi.js';
import { buildCli } from '../../src/cli/cli.js';
import { envSchema } from '../../src/config/config.js';
import { createRelayMetrics } from '../../src/metrics/relay-metrics.js';
import { ROOT, readText } from '../support/ops-files.js';

/** Markdown files of the documentation: the README and every page of docs/. */
const DOC_FILES = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

/** Markdown text without fenced code blocks (a `#` comment there is not a heading, a `](` not a link). */
const prose = (md: string) => md.replace(/^```[\s\S]*?^```/gm, '');

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens. */
const anchorOf = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}_\- ]/gu, '')
    .replace(/ /g, '-');

const anchorsOf = (md: string) => new Set([...prose(md).matchAll(/^#{1,6} (.+)$/gm)].map((m) => anchorOf(m[1] ?? '')));

/** The rows of a markdown table whose first cell names `name` in backticks. */
const tableRowNames = (md: string) =>
  prose(md)
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .flatMap((l) => [...(l.split('|')[1] ?? '').matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? ''));

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    if (name === 'node_modules' || name === 'dist' || name === '.git' || name === 'results') return [];
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

function commandsOf(cmd: Command, prefix = ''): { name: string; flags: string[] }[] {
  return cmd.commands.flatMap((c) => {
    const name = `${prefix}${c.name()}`;
    return [{ name, flags: c.options.map((o) => o.long ?? o.flags) }, ...commandsOf(c, `${name} `)];
  });
}

describe('README and docs/', () => {
  it('the README stays an overview: at most 12 KB', () => {
    expect(Buffer.byteLength(readText('README.md'))).toBeLessThanOrEqual(12_000);
  });

  it('no file sends the reader outside the repository for the interface', () => {
    // Spelt with a character class so that this file does not match itself.
    const outside = /c[o]ntract\.md|c[o]ntract section|st[e]ering folder/i;
    const dirs = ['src', 'workers', 'test', 'bench', 'docs', 'examples', 'grafana', '.ci'];
    const files = [
      ...dirs.flatMap((d) => walk(join(ROOT, d))),
      ...['README.md', 'Dockerfile', 'docker-compose.yml'].map((f) => join(ROOT, f)),
    ];
    const hits = files.filter((f) => outside.test(readFileSync(f, 'utf8'))).map((f) => relative(ROOT, f));
    expect(hits).toEqual([]);
  });

  it('docs/README.md indexes every page of docs/', () => {
    const index = readText('docs/README.md');
    const pages = DOC_FILES.filter((f) => f.startsWith('docs/') && f !== 'docs/README.md').map((f) => f.slice('docs/'.length));
    expect(pages.filter((page) => !index.includes(`](${page})`))).toEqual([]);
  });

  it('every link to a page of the repository lands on a heading that exists', () => {
    const broken: string[] = [];
    for (const file of DOC_FILES) {
      for (const [, target = ''] of prose(readText(file)).matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target)) continue;
        const [path = '', anchor] = target.split('#');
        const targetFile = path === '' ? file : relative(ROOT, join(ROOT, dirname(file), path));
        // A page another change adds may not be here yet; a page that is here must have the anchor.
        let text: string;
        try {
          text = readText(targetFile);
        } catch {
          continue;
        }
        if (anchor && !anchorsOf(text).has(anchor)) broken.push(`${file}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('docs/operations.md has a configuration row for every environment variable the config reads', () => {
    const documented = new Set(tableRowNames(readText('docs/operations.md')));
    const missing = Object.keys(envSchema.shape).filter((name) => !documented.has(name));
    expect(missing).toEqual([]);
  });

  it('docs/metrics-and-alerts.md has a row for every metric action-relay registers', async () => {
    const documented = new Set(tableRowNames(readText('docs/metrics-and-alerts.md')));
    const metrics = createRelayMetrics(undefined, { defaults: false });
    const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name);
    expect(names.length).toBeGreaterThan(5);
    expect(names.filter((n) => !documented.has(n))).toEqual([]);
  });

  it('docs/api.md has a row for every route of the OpenAPI document', () => {
    const documented = tableRowNames(readText('docs/api.md')).join('\n');
    const routes = Object.entries(buildOpenApiDocument({ bearer: false }).paths).flatMap(([path, ops]) =>
      Object.keys(ops as object).map((method) => `${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`),
    );
    expect(routes.length).toBeGreaterThan(10);
    // A row may name several routes (`GET /v1/actions`, `GET /v1/actions/:id`) or add a query string.
    expect(routes.filter((r) => !new RegExp(`${r.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}(?![\\w/:])`).test(documented))).toEqual([]);
  });

  it('docs/cli.md names every command and every option of the CLI', () => {
    const cli = prose(readText('docs/cli.md'));
    const io = { out: () => undefined, err: () => undefined, env: {} };
    const commands = commandsOf(buildCli(io));
    expect(commands.length).toBeGreaterThan(10);
    const missing = commands.flatMap(({ name, flags }) => [
      ...(cli.includes(`\`${name}`) ? [] : [name]),
      ...flags.filter((f) => !cli.includes(f)).map((f) => `${name} ${f}`),
    ]);
    expect(missing).toEqual([]);
  });
});
