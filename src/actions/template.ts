import type { FieldProblem } from '../errors/errors.js';

/** What a template can reference while rendering one attempt. */
export interface RenderScope {
  params: Record<string, unknown>;
  context: Record<string, unknown>;
  job: { id: string; attempt: number; idempotencyKey: string };
}

/** Marks a value whose placeholder had nothing to substitute. */
export const MISSING: unique symbol = Symbol('missing');
/** Renders a JSON template's text, or MISSING when its one placeholder had nothing to substitute. */
export type JsonRenderer = (scope: RenderScope) => string | typeof MISSING;

const PLACEHOLDER = /\{\{\s*(params|context|job)\.([A-Za-z0-9_]+)\s*\}\}/g;
const EXACT = /^\{\{\s*(params|context|job)\.([A-Za-z0-9_]+)\s*\}\}$/;
const JOB_FIELDS = new Set(['id', 'attempt', 'idempotencyKey']);

interface CompileContext {
  declaredParams: ReadonlySet<string>;
  problems: FieldProblem[];
}

type Getter = (scope: RenderScope) => unknown;

function getter(source: string, name: string, path: string, cx: CompileContext): Getter {
  if (source === 'params') {
    if (!cx.declaredParams.has(name)) {
      cx.problems.push({ path, message: `references undeclared parameter "${name}"` });
    }
    return (s) => (Object.hasOwn(s.params, name) ? s.params[name] : undefined);
  }
  if (source === 'context') return (s) => (Object.hasOwn(s.context, name) ? s.context[name] : undefined);
  if (!JOB_FIELDS.has(name)) {
    cx.problems.push({ path, message: `unknown job field "${name}" (id, attempt, idempotencyKey)` });
  }
  return (s) => s.job[name as keyof RenderScope['job']];
}

const LONE_SURROGATE_RE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** True when a string holds half of a UTF-16 surrogate pair: no UTF-8 (so no URL) can carry it. */
export function hasLoneSurrogate(s: string): boolean {
  return LONE_SURROGATE_RE.test(s);
}

/** How a substituted value reads inside longer text. */
export function stringify(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

interface StringTemplate {
  /** Set when the whole string is one placeholder: the typed value is kept. */
  exact?: Getter;
  render: (scope: RenderScope, encode?: (s: string) => string) => string;
  isConstant: boolean;
  /** Each placeholder as written (`params.note`) with what it reads, to name the source of a bad value. */
  refs: { ref: string; get: Getter }[];
}

export function compileString(template: string, path: string, cx: CompileContext): StringTemplate {
  const stray = template.replace(PLACEHOLDER, '');
  if (stray.includes('{{') || stray.includes('}}')) {
    cx.problems.push({
      path,
      message: 'malformed placeholder; use {{params.NAME}}, {{context.FIELD}} or {{job.id|attempt|idempotencyKey}}',
    });
  }
  const exactMatch = EXACT.exec(template);
  const parts: (string | Getter)[] = [];
  const refs: StringTemplate['refs'] = [];
  let last = 0;
  for (const m of template.matchAll(PLACEHOLDER)) {
    if (m.index > last) parts.push(template.slice(last, m.index));
    const get = getter(m[1] as string, m[2] as string, path, cx);
    parts.push(get);
    refs.push({ ref: `${m[1]}.${m[2]}`, get });
    last = m.index + m[0].length;
  }
  if (last < template.length) parts.push(template.slice(last));
  const isConstant = parts.every((p) => typeof p === 'string');
  const render = (scope: RenderScope, encode?: (s: string) => string): string => {
    let out = '';
    for (const part of parts) {
      if (typeof part === 'string') out += part;
      else {
        const s = stringify(part(scope));
        out += encode ? encode(s) : s;
      }
    }
    return out;
  };
  const result: StringTemplate = { render, isConstant, refs };
  if (exactMatch) result.exact = parts[0] as Getter;
  return result;
}

/**
 * Compiles a JSON template into a renderer of its JSON text, written straight out (no value is
 * built and then stringified). A string that is exactly one placeholder keeps the typed value; a
 * missing value is dropped from objects and arrays, or becomes null with allowNulls; a missing
 * top-level value is MISSING. Keys come in the template's own order, which is the order
 * JSON.stringify gives an object (integer-like keys first).
 */
export function compileJson(node: unknown, path: string, cx: CompileContext, allowNulls: boolean): JsonRenderer {
  const absent = allowNulls ? 'null' : MISSING;
  if (typeof node === 'string') {
    const t = compileString(node, path, cx);
    if (t.exact) {
      const get = t.exact;
      return (s) => {
        const v = get(s);
        // Values come from JSON (params, context) or are job fields: stringify always gives text.
        return v === undefined ? absent : (JSON.stringify(v) as string);
      };
    }
    if (t.isConstant) return constantText(node);
    return (s) => JSON.stringify(t.render(s));
  }
  if (Array.isArray(node)) {
    const items = node.map((item, i) => compileJson(item, `${path}[${i}]`, cx, allowNulls));
    return (s) => {
      let out = '';
      for (const item of items) {
        const v = item(s);
        if (v !== MISSING) out += out === '' ? v : `,${v}`;
      }
      return `[${out}]`;
    };
  }
  if (node !== null && typeof node === 'object') {
    const entries = Object.entries(node).map(
      ([key, value]) => [`${JSON.stringify(key)}:`, compileJson(value, `${path}.${key}`, cx, allowNulls)] as const,
    );
    return (s) => {
      let out = '';
      for (const [key, render] of entries) {
        const v = render(s);
        if (v !== MISSING) out += out === '' ? key + v : `,${key}${v}`;
      }
      return `{${out}}`;
    };
  }
  return constantText(node);
}

function constantText(node: unknown): JsonRenderer {
  const text = JSON.stringify(node);
  return () => text;
}

export type { CompileContext };
