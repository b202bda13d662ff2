#!/usr/bin/env node
import { main } from '../src/cli/cli.js';

await main(process.argv);
// Short commands leave nothing running; long ones return only after a graceful stop.
process.exit();
