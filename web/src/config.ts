// What the page is told by whoever serves it (`config.json` beside it):
// where the gateway is, and where tokens come from.

export type AuthConfig =
  | { kind: "dev" }
  | { kind: "oidc"; issuer: string; clientId: string; scope?: string };

export interface Config {
  /** The gateway's gRPC-web base URL, e.g. http://127.0.0.1:8080. */
  gatewayUrl: string;
  auth: AuthConfig;
}

/**
 * Without a `config.json` (the gateway serving the page, as `cargo xtask
 * up` runs it), the gateway is this page's origin and tokens are dev tokens.
 */
export async function loadConfig(): Promise<Config> {
  const response = await fetch("config.json", { cache: "no-store" });
  if (!response.ok && response.status !== 404) {
    throw new Error(`config.json: HTTP ${response.status}`);
  }
  const config = (response.ok ? await response.json() : {}) as Partial<Config>;
  return {
    gatewayUrl: config.gatewayUrl ?? location.origin,
    auth: config.auth ?? { kind: "dev" },
  };
}
