/**
 * Typed client of the outboxtodo API.
 *
 * The request and response types are generated from the API's OpenAPI document
 * (schema.d.ts; regenerate with `make client`, never edit it by hand), so a call that
 * does not match the document fails to type-check. At run time it is openapi-fetch: one
 * `fetch` per call, answers decoded as JSON, problem+json bodies returned as `error`.
 *
 * On top of that it does the two things every frontend of this API needs:
 * - the bearer token, read from `token()` before each request, so signing in or out
 *   needs no new client;
 * - read-your-writes: the API's reads of the read model (stats, leaderboard) may lag
 *   the writes. Each write answers a `Consistency-Token`; the client keeps the one of
 *   the last write answered and sends it with those reads, which then wait (bounded)
 *   for the read model to include that write and answer `Consistency: fresh`, or
 *   `stale` when it did not in time. Tokens are opaque, so with several writes in
 *   flight, the one answered last is the one waited for. `freshness(response)` reads
 *   those headers.
 */
import createClient, { type Client, type ClientOptions, type Middleware } from "openapi-fetch";

import type { components, operations, paths } from "./schema";

export type { components, operations, paths };

export type Problem = components["schemas"]["Problem"];

/** Response header of every write, request header of the read-model reads. */
export const consistencyTokenHeader = "Consistency-Token";

/** The reads served by the read model: the only ones that honour a consistency token. */
const readModelPaths: ReadonlySet<string> = new Set(["/v1/users/me/stats", "/v1/leaderboard"]);

/** How fresh an answer of the read model is, from its response headers. */
export interface Freshness {
  /** Whether the read included the write named by the consistency token sent with it; undefined when none was sent. */
  consistency: "fresh" | "stale" | undefined;
  /** Stream sequence of the newest event the read model had applied. */
  sequence: number | undefined;
  /** Commit time of that event. */
  watermark: Date | undefined;
}

/** The freshness headers of a read-model response (they need CORS to expose them). */
export function freshness(response: Response): Freshness {
  const consistency = response.headers.get("Consistency");
  const sequence = response.headers.get("X-Projection-Sequence");
  const watermark = response.headers.get("X-Projection-Watermark");
  return {
    consistency: consistency === "fresh" || consistency === "stale" ? consistency : undefined,
    sequence: sequence === null || sequence === "" ? undefined : Number(sequence),
    watermark: watermark === null || watermark === "" ? undefined : new Date(watermark),
  };
}

export interface TodoClientOptions extends Omit<ClientOptions, "baseUrl"> {
  /** Where the API is, e.g. http://localhost:8080 (no trailing /v1). */
  baseUrl: string;
  /** The bearer token to send, if any; called before every request. */
  token?: () => string | undefined;
}

export interface TodoClient extends Client<paths> {
  /** The consistency token of the last write answered, sent with the read-model reads. */
  consistencyToken(): string | undefined;
  /** Forgets the consistency token (on sign-out: it names another user's writes). */
  resetConsistency(): void;
}

export function createTodoClient({ token, ...options }: TodoClientOptions): TodoClient {
  const client = createClient<paths>(options);
  let latest: string | undefined;
  const middleware: Middleware = {
    onRequest({ request, schemaPath }) {
      const bearer = token?.();
      if (bearer !== undefined && !request.headers.has("Authorization")) {
        request.headers.set("Authorization", `Bearer ${bearer}`);
      }
      if (latest !== undefined && request.method === "GET" && readModelPaths.has(schemaPath)
        && !request.headers.has(consistencyTokenHeader)) {
        request.headers.set(consistencyTokenHeader, latest);
      }
      return request;
    },
    onResponse({ request, response }) {
      const answered = response.headers.get(consistencyTokenHeader);
      if (answered && request.method !== "GET" && response.ok) {
        latest = answered;
      }
      return undefined;
    },
  };
  client.use(middleware);
  return Object.assign(client, {
    consistencyToken: () => latest,
    resetConsistency: () => {
      latest = undefined;
    },
  });
}
