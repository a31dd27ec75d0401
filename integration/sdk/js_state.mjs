// Dapr's JavaScript SDK (HTTP, its default protocol) against this sidecar:
// state, publish, secrets, locks and metadata. Run by integration/sdk.rs
// with DAPR_HTTP_PORT set; exits non-zero on the first failed check.

import { DaprClient, CommunicationProtocolEnum } from "@dapr/dapr";

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
}

const client = new DaprClient({
  daprHost: "127.0.0.1",
  daprPort: process.env.DAPR_HTTP_PORT,
  communicationProtocol: CommunicationProtocolEnum.HTTP,
});

await client.state.save("s", [
  { key: "js1", value: { n: 1 } },
  { key: "js2", value: "text" },
]);
const one = await client.state.get("s", "js1");
check(JSON.stringify(one) === JSON.stringify({ n: 1 }), `get js1 ${JSON.stringify(one)}`);
const two = await client.state.get("s", "js2");
check(two === "text", `get js2 ${JSON.stringify(two)}`);
const missing = await client.state.get("s", "nope");
check(missing === "" || missing === undefined || missing === null, `get missing ${JSON.stringify(missing)}`);

const bulk = await client.state.getBulk("s", ["js1", "js2"]);
check(bulk.length === 2, `bulk ${JSON.stringify(bulk)}`);

await client.state.transaction("s", [
  { operation: "upsert", request: { key: "js3", value: 3 } },
  { operation: "delete", request: { key: "js1" } },
]);
check((await client.state.get("s", "js3")) === 3, "transaction upsert");
await client.state.delete("s", "js3");

const published = await client.pubsub.publish("ps", "orders", { id: 1 });
check(!published || !published.error, `publish ${JSON.stringify(published)}`);

const secret = await client.secret.get("files", "redis-password");
check(secret["redis-password"] === "change-me", `secret ${JSON.stringify(secret)}`);

const locked = await client.lock.lock("locks", "js-res", "js-owner", 30);
check(locked.success === true, `lock ${JSON.stringify(locked)}`);
const unlocked = await client.lock.unlock("locks", "js-res", "js-owner");
check(unlocked.status === 0, `unlock ${JSON.stringify(unlocked)}`);

const meta = await client.metadata.get();
check(meta.id === "sdk-app", `metadata ${JSON.stringify(meta)}`);

console.log("js sdk: all checks passed");
process.exit(0);
