/**
 * Seeded fuzzing of the archive readers (`snapshot inspect`'s inspectArchive,
 * readArchive with the records checked as an import checks them):
 *
 * - hostile content behind valid hashes (fuzz-archives.ts: records and
 *   meta.json mutated, every hash recomputed);
 * - damaged bytes of a real writer's archive (bytes flipped, cut, inserted,
 *   appended), which its gzip CRCs and hashes must catch.
 *
 * The contract: inspectArchive never rejects for an archive's content (its
 * problems say what is wrong, one sentence each, and ok is false when there
 * are any); readArchive + validateStateRecords accept exactly what inspect
 * calls ok, and refuse the rest with ArchiveError or StateFormatError.
 *
 * FUZZ_CASES=N runs more cases, FUZZ_SEED=S starts at another seed.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { RESERVED_KEY_PREFIX, SESSION_KEY_PREFIX } from '../../../src/fsm/sessions.js';
import { inspectArchive, readArchive } from '../../../src/snapshot/archive.js';
import { ArchiveError, StateFormatError } from '../../../src/snapshot/errors.js';
import { validateStateRecords } from '../../../src/snapshot/state-format.js';
import { SeededRng } from '../../harness/rng.js';
import { baseArchive, fuzzArchive, fuzzCases, fuzzSeed } from './fuzz-archives.js';
import { tempDir } from './helpers.js';

/** readChecked: readArchive with every record checked against meta.json (what an import that validates does); 'ok' or the error. */
async function readChecked(archive: Buffer): Promise<'ok' | Error> {
  try {
    await readArchive(Readable.from([archive]), async (meta, state) => {
      await validateStateRecords(state, meta);
    });
    return 'ok';
  } catch (err) {
    return err as Error;
  }
}

/** damage: `bytes` damaged the way a disk or a network would (flips, a cut, an insert, junk after). */
function damage(rng: SeededRng, bytes: Buffer): { bytes: Buffer; what: string } {
  const out = Buffer.from(bytes);
  switch (rng.nextInt(5)) {
    case 0: {
      const n = 1 + rng.nextInt(3);
      const at: number[] = [];
      for (let i = 0; i < n; i++) {
        const p = rng.nextInt(out.length);
        out[p] = (out[p] as number) ^ (1 + rng.nextInt(255));
        at.push(p);
      }
      return { bytes: out, what: `bytes flipped at ${at.join(',')} of ${out.length}` };
    }
    case 1: {
      const n = rng.nextInt(out.length);
      return { bytes: out.subarray(0, n), what: `cut at ${n} of ${out.length}` };
    }
    case 2: {
      const p = rng.nextInt(out.length);
      const junk = Buffer.alloc(1 + rng.nextInt(600), rng.nextInt(256));
      return { bytes: Buffer.concat([out.subarray(0, p), junk, out.subarray(p)]), what: `${junk.length} bytes inserted at ${p}` };
    }
    case 3: {
      const junk = rng.chance(0.5) ? Buffer.alloc(1 + rng.nextInt(2000)) : out.subarray(0, 1 + rng.nextInt(out.length - 1));
      return { bytes: Buffer.concat([out, junk]), what: `${junk.length} bytes appended` };
    }
    default: {
      const p = rng.nextInt(out.length);
      const n = 1 + rng.nextInt(40);
      return { bytes: Buffer.concat([out.subarray(0, p), out.subarray(p + n)]), what: `${n} bytes removed at ${p}` };
    }
  }
}

describe('fuzz: the archive readers (inspect, readArchive) on hostile and damaged archives', function () {
  this.timeout(60_000 + fuzzCases(100) * 200); // FUZZ_CASES runs by hand take longer

  for (const kind of ['hostile content, valid hashes', 'damaged bytes of a real archive'] as const) {
    it(`${kind}: inspect reports (never throws) exactly what readArchive + the record check refuse, with typed errors`, async () => {
      const cases = fuzzCases(100);
      const seed0 = fuzzSeed(kind.startsWith('hostile') ? 9_100_000 : 9_200_000);
      const { dir, cleanup } = await tempDir('snapcoord-archive-fuzz-');
      const outcomes = new Map<string, number>();
      try {
        for (let c = 0; c < cases; c++) {
          const seed = seed0 + c;
          const rng = new SeededRng(seed);
          const base = await baseArchive(rng.fork('base'));
          let archive: Buffer;
          let what: string;
          if (kind.startsWith('hostile')) {
            const f = await fuzzArchive(rng.fork('mutate'), base);
            archive = f.archive;
            what = f.what.join('; ');
          } else {
            ({ bytes: archive, what } = damage(rng.fork('damage'), base.bytes));
          }
          const where = `seed ${seed} (FUZZ_SEED=${seed} FUZZ_CASES=1): ${what}`;
          const file = join(dir, 'a.snapshot');
          await writeFile(file, archive);
          let report;
          try {
            report = await inspectArchive(file, { reservedKeyPrefix: RESERVED_KEY_PREFIX, sessionKeyPrefix: SESSION_KEY_PREFIX });
          } catch (err) {
            assert.fail(`${where}: inspect threw instead of reporting: ${(err as Error)?.stack ?? String(err)}`);
          }
          assert.equal(report.ok, report.problems.length === 0, `${where}: ok ${report.ok} with problems ${JSON.stringify(report.problems)}`);
          for (const p of report.problems) assert.ok(typeof p === 'string' && p.length > 0 && p.length < 2000, `${where}: problem ${JSON.stringify(p)}`);
          const read = await readChecked(archive);
          if (read !== 'ok') {
            assert.ok(read instanceof ArchiveError || read instanceof StateFormatError, `${where}: readArchive refused with an untyped error: ${read?.stack ?? String(read)}`);
          }
          assert.equal(read === 'ok', report.ok, `${where}: inspect says ${report.ok ? 'ok' : report.problems.join('; ')}, readArchive ${read === 'ok' ? 'ok' : read.message}`);
          const key = read === 'ok' ? 'ok' : `${read.name} ${(read as ArchiveError | StateFormatError).code}`;
          outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
        }
      } finally {
        await cleanup();
      }
      assert.ok([...outcomes.keys()].some((k) => k !== 'ok'), `nothing was refused: ${JSON.stringify([...outcomes])}`);
      if (process.env['FUZZ_CASES'] !== undefined) console.log(`      ${cases} cases from seed ${seed0}:`, Object.fromEntries(outcomes));
    });
  }
});
