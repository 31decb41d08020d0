// Where the bearer token comes from, behind one small interface: the
// gateway's development tokens (DEV_AUTH=on) or an OpenID provider
// (authorization code with PKCE). The rest of the page only asks for the
// current token and sends the user to sign in when there is none.

import { createClient, type Transport } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { DevAuthService } from "./gen/shop/auth/v1/auth_pb";
import type { AuthConfig } from "./config";

export interface Session {
  token: string;
  user: string;
  expiresAt: Date;
}

export interface TokenSource {
  /** "dev": a form asks for the user name; "oidc": a redirect. */
  readonly kind: AuthConfig["kind"];
  /** Starts signing in; resolves with the session, or redirects away. */
  signIn(user: string): Promise<Session | undefined>;
  /** Finishes a redirect back from the provider, if this page is one. */
  completeRedirect(): Promise<Session | undefined>;
}

const STORAGE_KEY = "shop.session";

export function savedSession(): Session | undefined {
  const raw = sessionStorage.getItem(STORAGE_KEY);
  if (!raw) return undefined;
  const saved = JSON.parse(raw) as { token: string; user: string; expiresAt: string };
  const session = { ...saved, expiresAt: new Date(saved.expiresAt) };
  return session.expiresAt.getTime() > Date.now() ? session : undefined;
}

export function saveSession(session: Session | undefined): void {
  if (session) {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  } else {
    sessionStorage.removeItem(STORAGE_KEY);
  }
}

/** Tokens from the gateway's DevAuthService: for development only. */
export class DevTokens implements TokenSource {
  readonly kind = "dev" as const;
  constructor(private readonly transport: Transport) {}

  async signIn(user: string): Promise<Session> {
    const issued = await createClient(DevAuthService, this.transport).issueToken({
      userId: user,
      roles: ["customer"],
    });
    const expiresAt = issued.expiresAt ? timestampDate(issued.expiresAt) : new Date(Date.now() + 3600_000);
    return { token: issued.accessToken, user, expiresAt };
  }

  async completeRedirect(): Promise<undefined> {
    return undefined;
  }
}

/** Authorization code flow with PKCE against an OpenID provider. */
export class OidcTokens implements TokenSource {
  readonly kind = "oidc" as const;
  constructor(private readonly config: Extract<AuthConfig, { kind: "oidc" }>) {}

  private async endpoints(): Promise<{ authorization_endpoint: string; token_endpoint: string }> {
    const url = `${this.config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
    const response = await fetch(url);
    if (!response.ok) throw new Error(`OpenID discovery failed: HTTP ${response.status}`);
    return response.json();
  }

  async signIn(): Promise<undefined> {
    const verifier = randomString(64);
    const state = randomString(24);
    sessionStorage.setItem("shop.pkce", JSON.stringify({ verifier, state, back: location.hash }));
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    const { authorization_endpoint } = await this.endpoints();
    const url = new URL(authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: "code",
      client_id: this.config.clientId,
      redirect_uri: redirectUri(),
      scope: this.config.scope ?? "openid",
      state,
      code_challenge: base64url(new Uint8Array(digest)),
      code_challenge_method: "S256",
    }).toString();
    location.assign(url.toString());
    return undefined;
  }

  async completeRedirect(): Promise<Session | undefined> {
    const params = new URLSearchParams(location.search);
    const code = params.get("code");
    const pending = sessionStorage.getItem("shop.pkce");
    if (!code || !pending) return undefined;
    sessionStorage.removeItem("shop.pkce");
    const { verifier, state, back } = JSON.parse(pending) as { verifier: string; state: string; back: string };
    if (params.get("state") !== state) throw new Error("sign-in answer does not match the request (state)");
    const { token_endpoint } = await this.endpoints();
    const response = await fetch(token_endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code,
        redirect_uri: redirectUri(),
        client_id: this.config.clientId,
        code_verifier: verifier,
      }),
    });
    if (!response.ok) throw new Error(`token exchange failed: HTTP ${response.status}`);
    const tokens = (await response.json()) as { access_token: string; expires_in?: number };
    history.replaceState(null, "", `${location.pathname}${back}`);
    const claims = JSON.parse(atob(tokens.access_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return {
      token: tokens.access_token,
      user: String(claims.preferred_username ?? claims.sub),
      expiresAt: new Date(Date.now() + (tokens.expires_in ?? 300) * 1000),
    };
  }
}

function redirectUri(): string {
  return `${location.origin}${location.pathname}`;
}

function randomString(bytes: number): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
