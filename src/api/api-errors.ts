import type { FastifyReply } from 'fastify';
import type { FieldProblem } from '../errors/errors.js';

export interface ApiErrorBody {
  error: { code: string; message: string; details?: FieldProblem[] | Record<string, unknown> };
}

/** Sends the error shape of docs/api.md ("Errors"). */
export function sendError(reply: FastifyReply, status: number, code: string, message: string, details?: ApiErrorBody['error']['details']) {
  const body: ApiErrorBody = { error: { code, message } };
  if (details !== undefined) body.error.details = details;
  return reply.code(status).send(body);
}
