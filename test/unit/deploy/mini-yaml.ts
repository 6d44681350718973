/**
 * parseMiniYaml: the YAML subset docker-compose.yml is written in, and no
 * more (so the project needs no YAML dependency): block mappings and block
 * sequences by indentation (spaces only), `key:` with an empty value as null
 * (or the block below it), scalars plain / 'single' / "double" quoted, flow
 * sequences written as JSON arrays of strings, and `#` comments on their own
 * line or after a space. Anything else (anchors, multi-line scalars, flow
 * mappings, tabs) throws with the line number, rather than being misread.
 */

export type Yaml = string | null | Yaml[] | { [key: string]: Yaml };

interface Line {
  readonly no: number;
  readonly indent: number;
  readonly text: string;
}

function fail(no: number, msg: string): never {
  throw new Error(`docker-compose.yml line ${no}: ${msg}`);
}

/** stripComment removes a trailing ` # comment` outside quotes. */
function stripComment(s: string, no: number): string {
  let quote: string | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote !== null) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === '#' && (i === 0 || s[i - 1] === ' ')) {
      return s.slice(0, i).trimEnd();
    }
  }
  if (quote !== null) fail(no, 'unterminated quoted string');
  return s;
}

function scalar(raw: string, no: number): Yaml {
  const s = raw.trim();
  if (s === '' || s === '~' || s === 'null') return null;
  if (s.startsWith('"')) {
    if (!s.endsWith('"') || s.length < 2) fail(no, `bad double-quoted string ${s}`);
    try {
      return JSON.parse(s) as string;
    } catch {
      fail(no, `unsupported escape in ${s}`);
    }
  }
  if (s.startsWith("'")) {
    if (!s.endsWith("'") || s.length < 2) fail(no, `bad single-quoted string ${s}`);
    return s.slice(1, -1).replace(/''/g, "'");
  }
  if (s.startsWith('[')) {
    let v: unknown;
    try {
      v = JSON.parse(s);
    } catch {
      fail(no, `flow sequences must be JSON arrays of strings: ${s}`);
    }
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) fail(no, `flow sequences must hold strings only: ${s}`);
    return v as string[];
  }
  if (/^[{&*!|>%@`]/.test(s)) fail(no, `unsupported YAML: ${s}`);
  return s;
}

/** splitKey splits `key: value` (the colon followed by a space or the end). */
function splitKey(text: string, no: number): [string, string] | null {
  const m = /^([A-Za-z0-9_.-]+|"[^"]*"|'[^']*'):(?:\s+(.*))?$/.exec(text);
  if (m === null) return null;
  const k = m[1] ?? '';
  const key = k.startsWith('"') || k.startsWith("'") ? (scalar(k, no) as string) : k;
  return [key, m[2] ?? ''];
}

export function parseMiniYaml(source: string): Yaml {
  const lines: Line[] = [];
  source.split('\n').forEach((raw, i) => {
    const no = i + 1;
    if (raw.includes('\t')) fail(no, 'tabs are not supported');
    const text = stripComment(raw.trimEnd(), no);
    if (text.trim() === '') return;
    lines.push({ no, indent: text.length - text.trimStart().length, text: text.trim() });
  });
  let pos = 0;

  function block(indent: number): Yaml {
    const first = lines[pos];
    if (first === undefined || first.indent < indent) return null;
    if (first.text === '-' || first.text.startsWith('- ')) return sequence(first.indent);
    return mapping(first.indent);
  }

  function sequence(indent: number): Yaml[] {
    const out: Yaml[] = [];
    for (let l = lines[pos]; l !== undefined && l.indent === indent; l = lines[pos]) {
      if (!(l.text === '-' || l.text.startsWith('- '))) fail(l.no, 'expected a "- " item');
      const rest = l.text.slice(1).trim();
      pos++;
      if (rest === '') out.push(block(indent + 1));
      else if (splitKey(rest, l.no) !== null) fail(l.no, 'mappings inside sequences are not supported');
      else out.push(scalar(rest, l.no));
    }
    const l = lines[pos];
    if (l !== undefined && l.indent > indent) fail(l.no, 'unexpected indentation');
    return out;
  }

  function mapping(indent: number): { [key: string]: Yaml } {
    const out: { [key: string]: Yaml } = {};
    for (let l = lines[pos]; l !== undefined && l.indent === indent; l = lines[pos]) {
      const kv = splitKey(l.text, l.no);
      if (kv === null) fail(l.no, `expected "key: value", got ${l.text}`);
      const [key, rest] = kv;
      if (Object.hasOwn(out, key)) fail(l.no, `duplicate key ${key}`);
      pos++;
      if (rest !== '') {
        out[key] = scalar(rest, l.no);
      } else {
        const next = lines[pos];
        // A block sequence may sit at the same indentation as its key (compose files often do).
        if (next !== undefined && (next.indent > indent || (next.indent === indent && next.text.startsWith('- ')))) {
          out[key] = next.indent > indent ? block(next.indent) : sequence(indent);
        } else {
          out[key] = null;
        }
      }
    }
    const l = lines[pos];
    if (l !== undefined && l.indent > indent) fail(l.no, 'unexpected indentation');
    return out;
  }

  const doc = block(0);
  const rest = lines[pos];
  if (rest !== undefined) fail(rest.no, 'unexpected content');
  return doc;
}
