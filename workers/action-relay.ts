#!/usr/bin/env node
import { endQuietlyOnEpipe, main } from '../src/cli/cli.js';

endQuietlyOnEpipe();
process.exitCode = await main(process.argv);
// Short commands leave nothing running; long ones return only after a graceful stop.
process.exit();
