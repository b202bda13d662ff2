import { scalarParamTypes } from '../../src/actions/param-types.js';
import type { FieldProblem } from './api.js';

/*
 * The form edits one plain object, the action definition as the API takes it; the YAML/JSON tab
 * shows the same object. No rule of the schema is repeated here: every check is the server's
 * (POST /console/api/validate), and its problems come back with the path of their field.
 */
export type Definition = Record<string, unknown>;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The value at a dotted path (`endpoint.url`), or undefined. */
export function getIn(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (!isObject(cur)) return undefined;
    cur = cur[part];
  }
  return cur;
}

/**
 * A copy with the value at `path` replaced; undefined removes the key, and an object left empty by
 * that is removed too (so clearing every rate-limit field removes `rateLimit`).
 */
export function setIn(obj: Definition, path: string, value: unknown): Definition {
  const [head, ...rest] = path.split('.') as [string, ...string[]];
  const copy: Definition = { ...obj };
  const next = rest.length === 0 ? value : setIn(isObject(obj[head]) ? (obj[head] as Definition) : {}, rest.join('.'), value);
  if (next === undefined || (rest.length > 0 && isObject(next) && Object.keys(next).length === 0)) delete copy[head];
  else copy[head] = next;
  return copy;
}

/** The element id of the control editing `path`, so that a problem can point at it. */
export const fieldId = (path: string) => `field-${path.replace(/[^A-Za-z0-9_-]/g, '_')}`;

/** The problems of exactly this field. */
export const problemsAt = (problems: FieldProblem[], path: string) => problems.filter((p) => p.path === path);

/** The problems of this field and everything under it. */
export const problemsUnder = (problems: FieldProblem[], path: string) =>
  problems.filter((p) => p.path === path || p.path.startsWith(`${path}.`));

export const PARAM_TYPES = [...scalarParamTypes, 'listObject'] as const;

export const SCALAR_TYPES = scalarParamTypes;

interface ParamSpec {
  type?: string;
  fields?: Record<string, ParamSpec>;
}

/** A value of each parameter's type, to start a preview from. */
export function sampleValue(spec: ParamSpec, name: string): unknown {
  const today = new Date().toISOString();
  switch (spec.type) {
    case 'integer':
      return 1;
    case 'decimal':
      return 1.5;
    case 'boolean':
      return true;
    case 'date':
      return today.slice(0, 10);
    case 'dateTime':
      return today;
    case 'listString':
      return [`${name}-1`];
    case 'listInteger':
      return [1, 2];
    case 'listDecimal':
      return [1.5];
    case 'listBoolean':
      return [true];
    case 'listDateTime':
      return [today];
    case 'listObject':
      return [sampleParams(spec.fields ?? {})];
    default:
      return `${name}-sample`;
  }
}

export function sampleParams(parameters: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!isObject(parameters)) return out;
  for (const [name, spec] of Object.entries(parameters)) out[name] = sampleValue(isObject(spec) ? (spec as ParamSpec) : {}, name);
  return out;
}

export const SAMPLE_CONTEXT = { journeyId: 'journey-1', journeyVersionId: 'v1', nodeId: 'node-1', profileId: 'profile-1' };

/** A new action: the smallest definition the server accepts, once it has an id and a URL. */
export function blankDefinition(): Definition {
  return { id: '', name: '', endpoint: { url: '', method: 'POST' }, auth: { type: 'none' } };
}

/** The fields each auth type has, with the secret references among them. */
export const AUTH_TYPES = ['none', 'apiKey', 'basic', 'bearer', 'oauth2ClientCredentials', 'customToken'] as const;

/** A definition as saved may hold defaults the author never wrote; nothing to strip, it is sent back as is. */
export const asDefinition = (v: unknown): Definition => (isObject(v) ? v : {});
