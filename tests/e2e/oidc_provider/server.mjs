// panva's oidc-provider (OpenID Certified) on 127.0.0.1, configured the way a
// team would wire it to jwtedge, for tests/e2e/test_oidc_provider.py.
//
// Not a mock: the provider's own authorization, token, revocation, end-session
// and JWKS endpoints answer; this file only supplies what oidc-provider asks
// its host to supply (keys, the client, accounts, the login and consent pages,
// the resource server) plus a read-only /_test/events view of what it did.
//
//   node server.mjs --modules DIR --keys FILE [options]
//
// DIR is the node_modules folder holding oidc-provider (the suite installs it
// into an ignored cache folder). FILE holds the private JWKS: created on the
// first start (RS256, PS256, ES256 and EdDSA signing keys, each with its "alg",
// plus an RSA "enc" key); --rotate prepends a new signing key per algorithm
// and keeps the old ones (what a key rotation looks like to a verifier).
// Once listening, one JSON line goes to stdout: {"issuer": "http://127.0.0.1:PORT"}.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    modules: { type: 'string' },
    keys: { type: 'string' },
    port: { type: 'string', default: '0' },
    rotate: { type: 'boolean', default: false },
    // One RSA key without "alg" that signs both RS256 and PS256 tokens
    // (oidc-provider allows it; a verifier keeps one algorithm per key).
    'rsa-without-alg': { type: 'boolean', default: false },
    'access-token-alg': { type: 'string', default: 'ES256' },
    'id-token-alg': { type: 'string', default: 'PS256' },
    'access-ttl': { type: 'string', default: '300' },
    // rotate: a new refresh token on every use (a spent one replayed revokes
    // the grant); default: oidc-provider's own policy, unchanged.
    'refresh-policy': { type: 'string', default: 'rotate' },
    'client-id': { type: 'string', default: 'web' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'post-logout-redirect-uri': { type: 'string', multiple: true, default: [] },
    resource: { type: 'string', default: 'https://api.example.test/' },
    audience: { type: 'string', default: 'api' },
  },
});

for (const required of ['modules', 'keys', 'client-secret']) {
  if (!args[required]) {
    console.error(`server.mjs: --${required} is required`);
    process.exit(2);
  }
}

const require = createRequire(join(args.modules, 'noop.js'));
const entry = require.resolve('oidc-provider');
const { default: Provider, errors } = await import(pathToFileURL(entry).href);
const providerVersion = JSON.parse(
  readFileSync(require.resolve('oidc-provider/package.json'), 'utf8'),
).version;

// -- keys --------------------------------------------------------------------

const SIGNING = {
  RS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  PS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  EdDSA: () => generateKeyPairSync('ed25519'),
};

function jwk(pair, extra) {
  return { ...pair.privateKey.export({ format: 'jwk' }), kid: randomUUID(), ...extra };
}

function freshSigningKeys() {
  if (args['rsa-without-alg']) {
    return [jwk(SIGNING.RS256(), { use: 'sig' })];
  }
  return Object.entries(SIGNING).map(([alg, make]) => jwk(make(), { alg, use: 'sig' }));
}

let keys;
if (existsSync(args.keys)) {
  keys = JSON.parse(readFileSync(args.keys, 'utf8')).keys;
} else {
  const enc = jwk(generateKeyPairSync('rsa', { modulusLength: 2048 }), {
    alg: 'RSA-OAEP',
    use: 'enc',
  });
  keys = [...freshSigningKeys(), enc];
}
if (args.rotate) {
  // oidc-provider signs with the first key that fits an algorithm: the new
  // keys sign from now on, the old ones stay published for tokens in flight.
  keys = [...freshSigningKeys(), ...keys];
}
writeFileSync(args.keys, JSON.stringify({ keys }), { mode: 0o600 });

// -- accounts ----------------------------------------------------------------

const ACCOUNTS = {
  ada: {
    password: 'correct horse battery staple',
    claims: {
      email: 'ada@example.com',
      email_verified: true,
      name: 'Ada Lovelace',
    },
    organizations: [
      { id: 'org_acme', slug: 'acme', name: 'Acme Inc.', role: 'owner' },
      { id: 'org_globex', slug: 'globex', name: 'Globex Corporation', role: 'member' },
    ],
    projects: [
      { id: 'prj_web', slug: 'website', organizationId: 'org_acme' },
      { id: 'prj_bill', slug: 'billing', organizationId: 'org_globex' },
    ],
  },
};

async function findAccount(ctx, sub) {
  const account = ACCOUNTS[sub];
  if (!account) return undefined;
  return {
    accountId: sub,
    async claims() {
      return { sub, ...account.claims };
    },
  };
}

// -- the provider ------------------------------------------------------------

const events = { grants: {}, grant_errors: [], grants_revoked: 0, requests: [] };
const accessTtl = Number(args['access-ttl']);

const server = createServer();
await new Promise((resolve) => server.listen(Number(args.port), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys },
  clients: [
    {
      client_id: args['client-id'],
      client_secret: args['client-secret'],
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: args['redirect-uri'],
      post_logout_redirect_uris: args['post-logout-redirect-uri'],
      id_token_signed_response_alg: args['id-token-alg'],
    },
  ],
  // Every client must use PKCE (oidc-provider's default says so too).
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'api:read'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  findAccount,
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: {
    keys: ['jwtedge-e2e-cookie-key-0123456789abcdef'],
    // Plain http on 127.0.0.1: browsers refuse SameSite=None without Secure.
    long: { signed: true, sameSite: 'lax' },
    short: { signed: true, sameSite: 'lax' },
  },
  ...(args['refresh-policy'] === 'rotate' ? { rotateRefreshToken: true } : {}),
  ttl: {
    AccessToken: accessTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 14 * 24 * 3600,
  },
  features: {
    devInteractions: { enabled: false },
    // Publishes the RSA "enc" key (for clients that encrypt request objects).
    encryption: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== args.resource) throw new errors.InvalidTarget();
        return {
          scope: 'api:read',
          audience: args.audience,
          accessTokenTTL: accessTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: args['access-token-alg'] } },
        };
      },
    },
  },
  // Organizations and projects ride in the JWT access token, as jwtedge expects.
  extraTokenClaims: async (ctx, token) => {
    if (token.kind !== 'AccessToken' || !token.resourceServer) return undefined;
    const account = ACCOUNTS[token.accountId];
    if (!account) return undefined;
    return { organizations: account.organizations, projects: account.projects };
  },
});

provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  events.grants[type] = (events.grants[type] || 0) + 1;
});
provider.on('grant.error', (ctx, err) => {
  events.grant_errors.push({ grant_type: ctx.oidc.params?.grant_type, error: err.error });
});
provider.on('grant.revoked', () => {
  events.grants_revoked += 1;
});

// -- login and consent pages -------------------------------------------------

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res, title, body, status = 200) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(`<!doctype html><html lang=en><meta charset=utf-8><title>${escape(title)}</title>`
    + `<h1>${escape(title)}</h1>${body}\n`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16384) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 'Unknown interaction', '', 400);
  const { prompt, params, session } = details;

  if (req.method === 'GET' && action === undefined) {
    if (prompt.name === 'login') {
      return page(res, 'Sign in', `<form method=post action="/interaction/${uid}/login">`
        + '<label>Login <input name=login autocomplete=username></label>'
        + '<label>Password <input name=password type=password></label>'
        + '<button type=submit id=sign-in>Sign in</button></form>');
    }
    const scopes = escape(params.scope || '');
    return page(res, 'Authorize', `<p>${escape(params.client_id)} asks for: ${scopes}</p>`
      + `<form method=post action="/interaction/${uid}/confirm">`
      + '<button type=submit id=allow>Allow</button></form>');
  }
  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const form = await readForm(req);
    const account = ACCOUNTS[form.get('login')];
    if (!account || account.password !== form.get('password')) {
      return page(res, 'Sign in', '<p id=error>Wrong login or password.</p>', 401);
    }
    return provider.interactionFinished(req, res, { login: { accountId: form.get('login') } }, {
      mergeWithLastSubmission: false,
    });
  }
  if (req.method === 'POST' && action === 'confirm' && prompt.name === 'consent') {
    await readForm(req);
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, {
      mergeWithLastSubmission: true,
    });
  }
  return page(res, 'Not allowed here', '', 400);
}

// -- the HTTP server ---------------------------------------------------------

const callback = provider.callback();
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm))?$/;

server.on('request', async (req, res) => {
  const { pathname } = new URL(req.url, issuer);
  res.on('finish', () => {
    events.requests.push({ method: req.method, path: pathname, status: res.statusCode });
  });
  if (pathname === '/_test/events' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(events));
    return;
  }
  const match = INTERACTION.exec(pathname);
  if (match) {
    try {
      await interaction(req, res, match[1], match[2]);
    } catch (err) {
      if (!res.headersSent) page(res, 'Interaction failed', `<p>${escape(err.name)}</p>`, 400);
    }
    return;
  }
  callback(req, res);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}

process.stdout.write(`${JSON.stringify({ issuer, version: providerVersion })}\n`);
