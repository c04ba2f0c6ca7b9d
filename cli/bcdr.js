#!/usr/bin/env node
// The `bcdr` command: loads the TypeScript CLI through tsx, resolved next to this file,
// so `npx bcdr` works from a clone without a build step.
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
