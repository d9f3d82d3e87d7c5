/**
 * The project's version, from its package.json (two levels above the compiled module: dist/src/version.js).
 */
import { readFileSync } from 'node:fs';

export const PROJECT_NAME = 'framepack-cog';

export const PROJECT_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
})();
