// A real OpenID Connect provider (panva/node-oidc-provider, OpenID certified) for the single
// sign-on tests. tests/test_sso.py starts it on a free port:
//   node provider.mjs PORT REDIRECT_URI
// The interaction (login and consent) completes on its own for the account named with
// POST /_test/next {"account", "amr", "tamper"}: the tests play the person at the provider, and
// choose an ID token signed by this provider's own key but for another audience or already
// expired (tamper "aud" / "exp"), to prove the service checks them.
import { createServer } from "node:http";
import Provider from "oidc-provider";
import { exportJWK, generateKeyPair, SignJWT, decodeJwt, decodeProtectedHeader } from "jose";

const [port, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const accounts = {
  alice: { email: "alice@gla.example", groups: ["comms-senders"] },
  bob: { email: "bob@gla.example", groups: ["finance"] },
  carol: { email: "carol@gla.example", groups: ["comms-senders"] },
};
let next = { account: "alice", amr: ["pwd", "mfa"], tamper: "" };

const { privateKey } = await generateKeyPair("RS256", { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: "test-key", alg: "RS256", use: "sig" };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "mailing-console",
      client_secret: "test-client-secret-0123456789",
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  jwks: { keys: [jwk] },
  cookies: { keys: ["test-cookie-key-0123456789"] },
  claims: {
    auth_time: null, iss: null, sid: null,
    openid: ["sub", "amr", "acr"], email: ["email", "email_verified"], groups: ["groups"],
  },
  scopes: ["openid", "email", "groups"],
  // Put the scopes' claims in the ID token itself, as Entra ID does for email and groups.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    const who = accounts[id];
    if (!who) return undefined;
    return {
      accountId: id,
      async claims() {
        // How this person signed in at the provider: amr ["pwd", "mfa"] like Entra ID's
        // multi-factor sign-in, or ["pwd"] for a password alone.
        const acr = next.amr.includes("mfa") ? "mfa" : "pwd";
        return { sub: id, email: who.email, email_verified: true, groups: who.groups, amr: next.amr, acr };
      },
    };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});

provider.use(async (ctx, nextMiddleware) => {
  await nextMiddleware();
  if (ctx.path === "/token" && next.tamper && ctx.body && ctx.body.id_token) {
    const claims = decodeJwt(ctx.body.id_token);
    const header = decodeProtectedHeader(ctx.body.id_token);
    const now = Math.floor(Date.now() / 1000);
    if (next.tamper === "aud") claims.aud = "some-other-application";
    if (next.tamper === "exp") Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
    ctx.body.id_token = await new SignJWT(claims).setProtectedHeader(header).sign(privateKey);
  }
});

const callback = provider.callback();
createServer(async (req, res) => {
  try {
    if (req.url === "/_test/next" && req.method === "POST") {
      let body = "";
      for await (const chunk of req) body += chunk;
      next = { account: "alice", amr: ["pwd", "mfa"], tamper: "", ...JSON.parse(body) };
      res.writeHead(204).end();
      return;
    }
    if (req.url.startsWith("/interaction/")) {
      const details = await provider.interactionDetails(req, res);
      let result;
      if (details.prompt.name === "login") {
        result = { login: { accountId: next.account, amr: next.amr, acr: next.amr.includes("mfa") ? "mfa" : "pwd" } };
      } else {
        const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
        grant.addOIDCScope("openid email groups");
        result = { consent: { grantId: await grant.save() } };
      }
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
      return;
    }
    callback(req, res);
  } catch (err) {
    res.writeHead(500, { "content-type": "text/plain" }).end(String(err));
  }
}).listen(Number(port), "127.0.0.1", () => console.log(`ready ${issuer}`));
