// Entry point of a delivery worker process (same as `action-relay worker`).
import { main } from '../src/cli/cli.js';

process.exitCode = await main([process.argv[0] ?? 'node', 'action-relay', 'worker']);
process.exit();
