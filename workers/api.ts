// Entry point of the API process (same as `action-relay api`).
import { main } from '../src/cli/cli.js';

process.exitCode = await main([process.argv[0] ?? 'node', 'action-relay', 'api']);
process.exit();
