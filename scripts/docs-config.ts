// Prints the configuration reference table for README.md (npm run docs:config).
import { configReference } from '../src/cli/config-reference.js';

process.stdout.write(`${configReference()}\n`);
