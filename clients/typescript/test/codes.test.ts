// The error code union cannot drift from the daemon's: it must equal the ErrorCode enum of
// docs/openapi.json (and of docs/asyncapi.json), in the same order.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { ERROR_CODES, TRANSIENT_CODES, type ErrorCode } from "../src/index.js";
import { REPO_ROOT } from "./helpers.js";

function documented(file: string): string[] {
  const doc = JSON.parse(readFileSync(join(REPO_ROOT, "docs", file), "utf8")) as {
    components: { schemas: { ErrorCode: { enum: string[] } } };
  };
  return doc.components.schemas.ErrorCode.enum;
}

test("ERROR_CODES equals components.schemas.ErrorCode.enum of docs/openapi.json", () => {
  assert.deepEqual([...ERROR_CODES], documented("openapi.json"));
});

test("ERROR_CODES equals the ErrorCode enum of docs/asyncapi.json", () => {
  assert.deepEqual([...ERROR_CODES], documented("asyncapi.json"));
});

test("the codes retried are codes of the daemon", () => {
  for (const code of TRANSIENT_CODES) assert.ok((ERROR_CODES as readonly string[]).includes(code), code);
  // A compile-time check too: each of these must be an ErrorCode.
  const retried: ErrorCode[] = ["shutting_down", "broker_unavailable", "backlog_full", "rate_limited"];
  assert.equal(retried.length, 4);
});
