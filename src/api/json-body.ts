import type { FastifyInstance } from 'fastify';

/** Deepest nesting of arrays and objects a JSON body may have. @defaultValue 64 */
export const MAX_JSON_DEPTH = 64;

/**
 * Whether a JSON text nests arrays and objects deeper than `max`. A scan of the text, before
 * JSON.parse: a body of 100 000 "[" would otherwise reach the recursive steps after it (JSON.stringify,
 * validation) and end as a stack overflow, a 500.
 */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return false;
}

const PROTO_REFUSED =
  'the JSON body carries a `__proto__` or `constructor.prototype` key, which is refused (it could alter object prototypes)';

/** Whether JSON.parse takes the text: asked only of a body fastify's parser refused. */
function isPlainJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Replaces fastify's JSON body parser by the same parser behind a depth check (400 `invalid_json`);
 * a body it refuses for a `__proto__` or `constructor.prototype` key is 400 `invalid_json` saying so.
 */
export function registerJsonBodyParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (jsonDepthExceeds(body as string, MAX_JSON_DEPTH)) {
      const err = Object.assign(new Error(`the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels`), {
        statusCode: 400,
        code: 'invalid_json',
      });
      done(err, undefined);
      return;
    }
    parse(req, body as string, (err, value) => {
      if (err && isPlainJson(body as string)) {
        // Valid JSON the parser refused: it carries a key that could pollute prototypes.
        done(Object.assign(new Error(PROTO_REFUSED), { statusCode: 400, code: 'invalid_json' }), undefined);
        return;
      }
      done(err, value);
    });
  });
}
