// Public entry point for a journey engine written in TypeScript.
export { loadConfig, type Config } from './config/config.js';
export { createRelayContext, type RelayContext } from './context/relay-context.js';
export { createProducer, type Producer, type EnqueueResult, type EnqueueManyItem } from './queue/producer.js';
export { jobInputSchema, type JobInput } from './queue/job-schema.js';
export { actionDefinitionSchema, type ActionDefinition, type ActionDefinitionInput } from './actions/action-schema.js';
export { parseActionDefinition } from './actions/compile-action.js';
export { ValidationError } from './errors/errors.js';
export type { DeadLetterRecord, AttemptRecord } from './queue/outcome-writer.js';
