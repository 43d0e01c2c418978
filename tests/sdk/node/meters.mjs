// Manage meters through the official Stripe Node SDK against meterflow and print what happened.
import Stripe from "stripe";

const url = new URL(process.env.METERFLOW_URL);
const options = {
  host: url.hostname,
  port: Number(url.port),
  protocol: url.protocol.replace(":", ""),
  maxNetworkRetries: 0,
};
const stripe = new Stripe(process.env.METERFLOW_KEY, options);

const first = await stripe.billing.meters.create({
  display_name: "Alpaca AI tokens",
  event_name: "alpaca_ai_tokens",
  default_aggregation: { formula: "sum" },
  customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
});
const second = await stripe.billing.meters.create({
  display_name: "GB stored",
  event_name: "gb_stored",
  default_aggregation: { formula: "last" },
  event_time_window: "day",
});
await stripe.billing.meters.update(first.id, { display_name: "Renamed tokens" });
const retrieved = await stripe.billing.meters.retrieve(first.id);
const listed = await stripe.billing.meters.list();
const page = await stripe.billing.meters.list({ limit: 1 });
let autoPaged = 0;
for await (const _meter of stripe.billing.meters.list({ limit: 1 })) autoPaged += 1;
const deactivated = await stripe.billing.meters.deactivate(first.id);
const reactivated = await stripe.billing.meters.reactivate(first.id);

const report = {
  createdObject: first.object,
  firstId: first.id,
  secondId: second.id,
  retrievedDisplayName: retrieved.display_name,
  listedIds: listed.data.map((m) => m.id),
  pageHasMore: page.has_more,
  autoPaged,
  deactivated: deactivated.status,
  reactivated: reactivated.status,
};
try {
  await stripe.billing.meters.retrieve("mtr_test_missing");
} catch (err) {
  report.missing = { type: err.type, status: err.statusCode, code: err.code };
}
try {
  await new Stripe("sk_test_" + "x".repeat(48), options).billing.meters.list();
} catch (err) {
  report.badKey = err.type;
}
console.log(JSON.stringify(report));
