// Send usage through a meter event session and stream with the official Stripe Node SDK, then
// read it back from event summaries; print what happened as JSON.
import Stripe from "stripe";

const url = new URL(process.env.METERFLOW_URL);
const options = {
  host: url.hostname,
  port: Number(url.port),
  protocol: url.protocol.replace(":", ""),
  maxNetworkRetries: 0,
};
const stripe = new Stripe(process.env.METERFLOW_KEY, options);

const meter = await stripe.billing.meters.create({
  display_name: "Alpaca AI tokens",
  event_name: "alpaca_ai_tokens",
  default_aggregation: { formula: "sum" },
});
const session = await stripe.v2.billing.meterEventSession.create();
const streaming = new Stripe(session.authentication_token, options);
const now = Math.floor(Date.now() / 1000);
const events = [];
for (let i = 0; i < 50; i++) {
  events.push({
    event_name: "alpaca_ai_tokens",
    identifier: `node-stream-${i}`,
    payload: { stripe_customer_id: "cus_node", value: "2" },
    timestamp: new Date((now - 60) * 1000).toISOString(),
  });
}
await streaming.v2.billing.meterEventStream.create({ events });

let secretKeyError = null;
try {
  await stripe.v2.billing.meterEventStream.create({ events: events.slice(0, 1) });
} catch (err) {
  secretKeyError = { type: err.type, status: err.statusCode };
}

// Poll the summaries until the stream's usage is visible (the aggregator folds asynchronously).
const start = Math.floor((now - 3600) / 60) * 60;
const end = Math.floor((now + 120) / 60) * 60;
const deadline = Date.now() + 30_000;
let value = 0;
while (Date.now() < deadline) {
  const summaries = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: "cus_node",
    start_time: start,
    end_time: end,
  });
  value = summaries.data[0].aggregated_value;
  if (value >= 100) break;
  await new Promise((resolve) => setTimeout(resolve, 100));
}

console.log(
  JSON.stringify({
    sessionObject: session.object,
    expiresAt: session.expires_at,
    secretKeyError,
    aggregatedValue: value,
  }),
);
