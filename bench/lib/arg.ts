/** arg: the value after `--name` on this process's command line, else `fallback` (the benches' plain flags). */
export function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}
