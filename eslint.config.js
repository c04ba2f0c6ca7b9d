// @ts-check
import tseslint from 'typescript-eslint';

const nodeBuiltins = ['node:*', 'fs', 'fs/*', 'path', 'os', 'crypto', 'child_process', 'net', 'http', 'https', 'stream', 'stream/*', 'util', 'url', 'events', 'timers', 'timers/*', 'worker_threads', 'process', 'buffer', 'zlib', 'dns', 'tls'];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', '.data/**', '.tools/**', 'db/migrations/**', '.scratch/**', 'test-artifacts/**'] },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts', '**/*.tsx'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { prefer: 'type-imports', fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    // Workflow code runs in Temporal's deterministic sandbox: no I/O, no Node built-ins, no database clients.
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: nodeBuiltins, message: 'Workflow code must stay deterministic: no Node built-ins in workflows/. Do I/O in an activity.' },
            { group: ['drizzle-orm', 'drizzle-orm/*', 'postgres', '../db/*', '../lib/*', '../activities/*'], allowTypeImports: true, message: 'Workflow code must not touch the catalog or engines: call an activity (type-only imports are fine).' },
          ],
        },
      ],
    },
  },
);
