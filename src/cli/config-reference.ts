/**
 * configReference renders the `snapcoord serve` configuration reference (every
 * flag, its environment twin and its description) as a Markdown table, from
 * the one table the CLI itself is built from (SERVE_OPTIONS). The README's
 * table is generated with `npm run docs:config` and checked by a test.
 */
import { CONFIG_ENV, SERVE_OPTIONS } from './config.js';

export function configReference(): string {
  const rows = SERVE_OPTIONS.map((o) => {
    const flag = o.kind === 'bool' ? `--${o.flag}` : o.aloneValue !== undefined ? `--${o.flag} [${o.valueName}]` : `--${o.flag} <${o.valueName}>`;
    return `| \`${flag}\` | \`${o.env}\` | \`${o.key}\` | ${o.description.replace(/\|/g, '\\|')} |`;
  });
  return [
    '| flag | environment | config file key | meaning |',
    '| --- | --- | --- | --- |',
    ...rows,
    `| \`--config <file>\` | \`${CONFIG_ENV}\` | | JSON file of options (flag > env > file > default) |`,
  ].join('\n');
}
