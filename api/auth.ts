import type { MiddlewareHandler } from 'hono';
import { timingSafeEqual } from 'node:crypto';
import type { Role, TokenConfig } from '../lib/config.js';
import { ApiError } from './errors.js';

/** The caller, as established by its bearer token. */
export interface Principal {
  identity: string;
  roles: Role[];
}

/** Hono variables set by the auth middleware. */
export interface AuthVariables {
  principal: Principal;
}

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Requires `Authorization: Bearer <token>` naming a configured token; 401 otherwise. */
export function bearerAuth(tokens: TokenConfig[]): MiddlewareHandler<{ Variables: AuthVariables }> {
  return async (c, next) => {
    const header = c.req.header('authorization') ?? '';
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match?.[1]) throw new ApiError(401, 'unauthorized', 'missing bearer token: send Authorization: Bearer <token>');
    const presented = match[1];
    const found = tokens.find((t) => sameToken(t.token, presented));
    if (!found) throw new ApiError(401, 'unauthorized', 'unknown bearer token');
    c.set('principal', { identity: found.identity, roles: found.roles });
    await next();
  };
}

/** Requires one of `roles`; 403 naming the role needed otherwise. */
export function requireRole(...roles: Role[]): MiddlewareHandler<{ Variables: AuthVariables }> {
  return async (c, next) => {
    const p = c.get('principal');
    if (!p.roles.some((r) => roles.includes(r))) {
      throw new ApiError(403, 'forbidden', `${p.identity} lacks the ${roles.join(' or ')} role needed for ${c.req.method} ${c.req.path}`);
    }
    await next();
  };
}
