// The Alpaca walkthrough through the official Stripe Node SDK against meterflow: meter, metered
// price, customer, subscription, events, then the preview; print what it shows as JSON.
import Stripe from "stripe";

const url = new URL(process.env.METERFLOW_URL);
const stripe = new Stripe(process.env.METERFLOW_KEY, {
  host: url.hostname,
  port: Number(url.port),
  protocol: url.protocol.replace(":", ""),
  maxNetworkRetries: 0,
});
const POLL_DEADLINE_MS = 30_000;

const meter = await stripe.billing.meters.create({
  display_name: "Alpaca AI tokens",
  event_name: "alpaca_ai_tokens",
  default_aggregation: { formula: "sum" },
  customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
  value_settings: { event_payload_key: "value" },
});
const price = await stripe.prices.create({
  currency: "usd",
  unit_amount: 4,
  transform_quantity: { divide_by: 100, round: "up" },
  recurring: { interval: "month", usage_type: "metered", meter: meter.id },
  product_data: { name: "Alpaca AI tokens" },
});
const customer = await stripe.customers.create({ name: "Jenny Rosen" });
const subscription = await stripe.subscriptions.create({
  customer: customer.id,
  items: [{ price: price.id }],
});
for (const [i, value] of ["1000", "234"].entries()) {
  await stripe.billing.meterEvents.create({
    event_name: "alpaca_ai_tokens",
    identifier: `node-billing-${i}`,
    payload: { stripe_customer_id: customer.id, value },
  });
}
const deadline = Date.now() + POLL_DEADLINE_MS;
let preview;
do {
  preview = await stripe.invoices.createPreview({ customer: customer.id });
  if (preview.amount_due === 52) break;
  await new Promise((resolve) => setTimeout(resolve, 100));
} while (Date.now() < deadline);
const line = preview.lines.data[0];
console.log(
  JSON.stringify({
    amountDue: preview.amount_due,
    line: [line.quantity, line.amount, line.pricing.price_details.price],
    price: price.id,
    subscription: subscription.id,
    previewSubscription: preview.parent.subscription_details.subscription,
  }),
);
