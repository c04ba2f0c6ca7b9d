import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The project root, whether running from sources (tsx) or from the compiled `dist/` tree. */
export const projectRoot = path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '..', '..') : path.resolve(here, '..');

/** True when this module runs from the compiled `dist/` tree. */
export const isCompiled = path.basename(path.dirname(here)) === 'dist';

/** True when `metaUrl` is the module node was asked to run (the ESM `require.main === module`). */
export function isMain(metaUrl: string): boolean {
  return !!process.argv[1] && fileURLToPath(metaUrl) === path.resolve(process.argv[1]);
}
