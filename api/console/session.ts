import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import type { TokenConfig } from '../../lib/config.js';
import type { Principal } from '../auth.js';

/** The session cookie: the bearer token itself, readable only by the console's own requests. */
export const SESSION_COOKIE = 'bcdr_console';
/** A random value set with the login page, so the login form can carry a CSRF token before any session exists. */
export const LOGIN_COOKIE = 'bcdr_console_login';
export const COOKIE_PATH = '/console';

/** Who is signed in: the token (sent on as a bearer token), its principal, and the session's CSRF token. */
export interface Session {
  token: string;
  principal: Principal;
  csrf: string;
}

/** What a token may look like before it goes into an Authorization header (no spaces, no control characters). */
export const TOKEN_SHAPE = /^[\x21-\x7e]{1,512}$/;

/**
 * The principal a token stands for, from the configured tokens, compared in
 * constant time as api/auth.ts does (every configured token is compared, so
 * the time does not say which one matched).
 */
export function principalFor(tokens: TokenConfig[], presented: string): Principal | null {
  const p = Buffer.from(presented);
  let found: TokenConfig | null = null;
  for (const t of tokens) {
    const x = Buffer.from(t.token);
    if (x.length === p.length && timingSafeEqual(x, p)) found = t;
  }
  return found ? { identity: found.identity, roles: [...found.roles] } : null;
}

/**
 * CSRF tokens: an HMAC, under a random key of this process, of the session
 * token (or of the login cookie's nonce before sign-in). A page from another
 * site cannot read it, so it cannot forge a form that carries it. A restart
 * of the API makes open forms stale (the page says to reload).
 */
export class CsrfTokens {
  private readonly key = randomBytes(32);

  forSession(token: string): string {
    return createHmac('sha256', this.key).update(`session\0${token}`).digest('base64url');
  }

  forLogin(nonce: string): string {
    return createHmac('sha256', this.key).update(`login\0${nonce}`).digest('base64url');
  }

  static same(a: string | undefined, b: string): boolean {
    if (typeof a !== 'string') return false;
    const x = Buffer.from(a);
    const y = Buffer.from(b);
    return x.length === y.length && timingSafeEqual(x, y);
  }
}

/** Secure only over https (directly, or as the proxy in front says): a plain-http local stack must still work. */
const isHttps = (c: Context) => new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto')?.split(',')[0]?.trim() === 'https';

const cookieOptions = (c: Context) => ({ httpOnly: true, sameSite: 'Strict' as const, path: COOKIE_PATH, secure: isHttps(c) });

export function startSession(c: Context, token: string): void {
  setCookie(c, SESSION_COOKIE, token, { ...cookieOptions(c), maxAge: 12 * 3600 });
  deleteCookie(c, LOGIN_COOKIE, cookieOptions(c));
}

export function endSession(c: Context): void {
  deleteCookie(c, SESSION_COOKIE, cookieOptions(c));
}

/** The session of this request, or null when no cookie names a configured token. */
export function readSession(c: Context, tokens: TokenConfig[], csrf: CsrfTokens): Session | null {
  const token = getCookie(c, SESSION_COOKIE);
  if (!token || !TOKEN_SHAPE.test(token)) return null;
  const principal = principalFor(tokens, token);
  return principal ? { token, principal, csrf: csrf.forSession(token) } : null;
}

/** The login nonce of this browser, set (and returned) when it has none yet. */
export function loginNonce(c: Context): string {
  const existing = getCookie(c, LOGIN_COOKIE);
  if (existing && /^[A-Za-z0-9_-]{22,64}$/.test(existing)) return existing;
  const nonce = randomBytes(18).toString('base64url');
  setCookie(c, LOGIN_COOKIE, nonce, { ...cookieOptions(c), maxAge: 3600 });
  return nonce;
}

export const readLoginNonce = (c: Context) => getCookie(c, LOGIN_COOKIE);
