// The Node peer of portcullis-bench: better-auth (email and password, PostgreSQL through
// pg) behind plain node:http. Routes:
//   GET  /hello            the bare route: no check at all
//   GET  /protected        the same answer after auth.api.getSession({ headers }): 401 without a session
//   *    /api/auth/*       better-auth's own handler (sign-up, sign-in, sign-out)
// Usage: node server.mjs --database-url URL --cookie-cache on|off [--migrate]
// Prints "listening <addr>" once it serves, and exits when its standard input closes,
// so it never outlives the harness.
import http from "node:http";
import { parseArgs } from "node:util";
import pg from "pg";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { fromNodeHeaders, toNodeHandler } from "better-auth/node";

// How long better-auth's signed session_data cookie is trusted without a database
// read, when the cookie cache is on (its default, written out so the harness can say it).
const COOKIE_CACHE_SECONDS = 300;
// Connections to PostgreSQL: pg's default pool size, written out.
const POOL_SIZE = 10;

const { values } = parseArgs({
  options: {
    "database-url": { type: "string" },
    "cookie-cache": { type: "string" },
    migrate: { type: "boolean", default: false },
  },
});
const databaseUrl = values["database-url"];
const cookieCache = values["cookie-cache"];
if (!databaseUrl || (cookieCache !== "on" && cookieCache !== "off")) {
  console.error("usage: node server.mjs --database-url URL --cookie-cache on|off [--migrate]");
  process.exit(2);
}

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const { address, port } = server.address();
const origin = `http://${address}:${port}`;

const auth = betterAuth({
  baseURL: origin,
  trustedOrigins: [origin],
  // Fixed and public on purpose: the database is a throwaway one.
  secret: "portcullis-bench: a throwaway secret for a throwaway database",
  database: new pg.Pool({ connectionString: databaseUrl, max: POOL_SIZE }),
  emailAndPassword: { enabled: true },
  rateLimit: { enabled: false },
  session: {
    cookieCache: { enabled: cookieCache === "on", maxAge: COOKIE_CACHE_SECONDS },
  },
});

if (values.migrate) {
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
}

const authHandler = toNodeHandler(auth);
server.on("request", async (request, response) => {
  try {
    if (request.url.startsWith("/api/auth/")) {
      await authHandler(request, response);
    } else if (request.method === "GET" && request.url === "/hello") {
      response.writeHead(200, { "content-type": "text/plain" }).end("hello\n");
    } else if (request.method === "GET" && request.url === "/protected") {
      const session = await auth.api.getSession({ headers: fromNodeHeaders(request.headers) });
      if (session) {
        response.writeHead(200, { "content-type": "text/plain" }).end("hello\n");
      } else {
        response.writeHead(401).end();
      }
    } else {
      response.writeHead(404).end();
    }
  } catch (error) {
    console.error(error);
    response.writeHead(500).end();
  }
});

console.log(`cookie-cache-seconds ${cookieCache === "on" ? COOKIE_CACHE_SECONDS : 0}`);
console.log(`listening ${address}:${port}`);
process.stdin.on("end", () => process.exit(0));
process.stdin.on("close", () => process.exit(0));
process.stdin.resume();
