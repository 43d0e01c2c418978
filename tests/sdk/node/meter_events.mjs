// Record usage through the official Stripe Node SDK against meterflow, cancel some of it, and read
// the totals back from event summaries; print what happened as JSON.
import Stripe from "stripe";

const url = new URL(process.env.METERFLOW_URL);
const stripe = new Stripe(process.env.METERFLOW_KEY, {
  host: url.hostname,
  port: Number(url.port),
  protocol: url.protocol.replace(":", ""),
  maxNetworkRetries: 0,
});
const EVENT_NAME = "alpaca_ai_tokens";
const CUSTOMER = "cus_node";
const POLL_DEADLINE_MS = 30_000;

const nowS = Math.floor(Date.now() / 1000);
const hourS = 3600;
// Hour-aligned bounds around now, so the same range serves the whole-range and hourly summaries.
const startTime = Math.floor(nowS / hourS) * hourS - hourS;
const endTime = startTime + 3 * hourS;

const meter = await stripe.billing.meters.create({
  display_name: "Alpaca AI tokens",
  event_name: EVENT_NAME,
  default_aggregation: { formula: "sum" },
  customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
  value_settings: { event_payload_key: "value" },
});

function payload(value) {
  return { stripe_customer_id: CUSTOMER, value: String(value) };
}

const v1Event = await stripe.billing.meterEvents.create({
  event_name: EVENT_NAME,
  payload: payload(25),
  identifier: "node-v1",
  timestamp: nowS - 120,
});
const v2Timestamp = new Date((nowS - 60) * 1000).toISOString();
const v2Event = await stripe.v2.billing.meterEvents.create({
  event_name: EVENT_NAME,
  payload: payload(5),
  identifier: "node-v2",
  timestamp: v2Timestamp,
});
// Two more, to be cancelled once processed: one through each API version.
await stripe.billing.meterEvents.create({
  event_name: EVENT_NAME,
  payload: payload(1000),
  identifier: "node-v1-cancelled",
});
await stripe.v2.billing.meterEvents.create({
  event_name: EVENT_NAME,
  payload: payload(100),
  identifier: "node-v2-cancelled",
});

async function total(params = {}) {
  const page = await stripe.billing.meters.listEventSummaries(meter.id, {
    customer: CUSTOMER,
    start_time: startTime,
    end_time: endTime,
    ...params,
  });
  return { page, total: page.data.reduce((sum, s) => sum + s.aggregated_value, 0) };
}

// Events are folded asynchronously: poll the summaries until the expected total appears.
async function waitForTotal(expected) {
  const deadline = Date.now() + POLL_DEADLINE_MS;
  for (;;) {
    const seen = await total();
    if (seen.total === expected) return seen.page;
    if (Date.now() > deadline) {
      throw new Error(`summaries total ${seen.total} after ${POLL_DEADLINE_MS} ms, expected ${expected}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const beforeCancel = await waitForTotal(1130);
const v1Adjustment = await stripe.billing.meterEventAdjustments.create({
  event_name: EVENT_NAME,
  type: "cancel",
  cancel: { identifier: "node-v1-cancelled" },
});
const v2Adjustment = await stripe.v2.billing.meterEventAdjustments.create({
  event_name: EVENT_NAME,
  type: "cancel",
  cancel: { identifier: "node-v2-cancelled" },
});
const afterCancel = await waitForTotal(30);
const hourly = await total({ value_grouping_window: "hour" });

const report = {
  meterId: meter.id,
  v1Event: {
    object: v1Event.object,
    identifier: v1Event.identifier,
    timestamp: v1Event.timestamp,
    payload: v1Event.payload,
  },
  v2Event: {
    object: v2Event.object,
    identifier: v2Event.identifier,
    timestamp: v2Event.timestamp,
    sentTimestamp: v2Timestamp,
  },
  totalBeforeCancel: beforeCancel.data.map((s) => s.aggregated_value),
  v1Adjustment: {
    object: v1Adjustment.object,
    status: v1Adjustment.status,
    identifier: v1Adjustment.cancel.identifier,
  },
  v2Adjustment: {
    object: v2Adjustment.object,
    status: v2Adjustment.status,
    identifier: v2Adjustment.cancel.identifier,
    id: v2Adjustment.id,
  },
  summary: afterCancel.data.map((s) => ({
    id: s.id,
    object: s.object,
    meter: s.meter,
    livemode: s.livemode,
    aggregated_value: s.aggregated_value,
    start_time: s.start_time,
    end_time: s.end_time,
  })),
  range: { startTime, endTime },
  hourlyTotal: hourly.total,
  hourlyWindows: hourly.page.data.map((s) => s.end_time - s.start_time),
};
try {
  await stripe.billing.meterEvents.create({ event_name: "no_such_meter", payload: payload(1) });
} catch (err) {
  report.noMeter = { type: err.type, status: err.statusCode, code: err.code };
}
console.log(JSON.stringify(report));
