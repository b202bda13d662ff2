import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { propertyRuns } from '../support/property-runs.js';
import { compileAction, parseActionDefinition } from '../../src/actions/compile-action.js';
import { InvalidParamsError, ValidationError } from '../../src/errors/errors.js';
import { actionArb } from '../support/action-arbitraries.js';

/** A definition using most of the schema: each mutation of it lands somewhere meaningful. */
const RICH = {
  id: 'acme_sms',
  name: 'Send SMS',
  description: 'd',
  endpoint: {
    url: 'https://api.acme.example/v1',
    path: '/regions/{{params.region}}/messages',
    method: 'POST',
    query: { campaign: '{{context.journeyId}}', source: 'journeys' },
    headers: { 'X-Tenant': 'journeys', 'X-Profile': '{{context.profileId}}' },
    timeoutMs: 10000,
  },
  auth: { type: 'apiKey', name: 'X-Api-Key', in: 'header', value: { env: 'ACME_KEY' } },
  parameters: {
    region: { type: 'string', required: true },
    amount: { type: 'decimal' },
    items: { type: 'listObject', fields: { sku: { type: 'string', required: true }, qty: { type: 'integer' } } },
  },
  body: { to: 'x', amount: '{{params.amount}}', items: '{{params.items}}', text: 'job {{job.id}}#{{job.attempt}}' },
  allowNulls: false,
  response: { fields: { messageId: { type: 'string' }, segments: { type: 'integer', path: 'data.segments' } } },
  retry: { maxAttempts: 4, backoff: { type: 'exponential', delayMs: 1000, maxDelayMs: 300000 }, retryOn: [429, 503] },
  rateLimit: { key: 'acme', max: 100, perMs: 1000, maxConcurrent: 5 },
  circuitBreaker: { failureRatio: 0.5, minRequests: 20, windowMs: 30000, openMs: 30000 },
};

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every path (list of keys) into a JSON document, the root included. */
function pathsOf(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  const out = [prefix];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...pathsOf(v, [...prefix, i])));
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) out.push(...pathsOf(v, [...prefix, k]));
  return out;
}

interface Mutation {
  at: number;
  op: 'set' | 'delete' | 'add';
  value: unknown;
  key: string;
}

/** Applies mutations to a copy: replace a node, delete it, or add a key beside it. */
function mutate(doc: unknown, mutations: Mutation[]): unknown {
  const root = { doc: structuredClone(doc) as unknown };
  for (const m of mutations) {
    const paths = pathsOf(root.doc);
    const path = ['doc', ...(paths[m.at % paths.length] ?? [])];
    const key = path.pop() as string | number;
    let parent: unknown = root;
    for (const k of path) parent = (parent as Record<string | number, unknown>)[k];
    const p = parent as Record<string | number, unknown>;
    if (m.op === 'set') p[key] = m.value;
    else if (m.op === 'delete' && key !== 'doc') {
      if (Array.isArray(p)) p.splice(Number(key), 1);
      else delete p[key];
    } else if (m.op === 'add') {
      const target = p[key];
      if (target !== null && typeof target === 'object' && !Array.isArray(target))
        Object.defineProperty(target, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
    }
  }
  return root.doc;
}

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  op: fc.constantFrom('set', 'delete', 'add'),
  value: fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.constantFrom(
      '{{params.ghost}}',
      '{{ params.region }}',
      '{{nope}}',
      'a\r\nb',
      '✓',
      '__proto__',
      -1,
      0,
      Number.MAX_VALUE,
      'GET',
      'https://x',
      '',
    ),
  ),
  key: fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('__proto__', 'constructor', 'prototype', 'fields', 'type', 'X-Evil\n')),
});

/** Parses and compiles; a refusal must be a ValidationError whose every problem names a path and says why. */
function parseOrRefuse(input: unknown): void {
  let def;
  try {
    def = parseActionDefinition(input);
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    const problems = (err as ValidationError).problems;
    expect(problems.length).toBeGreaterThan(0);
    for (const p of problems) {
      expect(typeof p.path).toBe('string');
      expect(p.message).toEqual(expect.any(String));
      expect(p.message.length).toBeGreaterThan(0);
    }
    return;
  }
  const compiled = compileAction(def, { version: 1, userAgent: 'ua' });
  try {
    compiled.buildRequest({ params: {}, context: {}, job: { id: 'j', attempt: 1, idempotencyKey: 'k' } });
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidParamsError);
  }
}

describe('the action definition schema (property)', () => {
  it('random JSON documents are parsed or refused with a ValidationError, nothing else', () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 4 }), parseOrRefuse), { numRuns: propertyRuns(300) });
  });

  it('random objects (null prototypes, sparse arrays, odd numbers, undefined) are parsed or refused with a ValidationError', () => {
    const arb = fc.anything({ maxDepth: 3, withNullPrototype: true, withSparseArray: true, withObjectString: true });
    fc.assert(fc.property(arb, parseOrRefuse), { numRuns: propertyRuns(300) });
  });

  it('mutations of a valid definition are parsed or refused with a ValidationError naming a field', () => {
    expect(() => parseActionDefinition(RICH)).not.toThrow();
    fc.assert(
      fc.property(fc.array(mutationArb, { minLength: 1, maxLength: 3 }), (mutations) => parseOrRefuse(mutate(RICH, mutations))),
      { numRuns: propertyRuns(500) },
    );
  });

  it('mutations of generated valid definitions are parsed or refused with a ValidationError', () => {
    fc.assert(
      fc.property(actionArb, fc.array(mutationArb, { minLength: 1, maxLength: 2 }), (action, mutations) =>
        parseOrRefuse(mutate(action.definition as Json, mutations)),
      ),
      { numRuns: propertyRuns(300) },
    );
  });
});
