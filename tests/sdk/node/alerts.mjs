// Manage billing alerts through the official Stripe Node SDK against meterflow and print what
// happened as JSON.
import Stripe from "stripe";

const url = new URL(process.env.METERFLOW_URL);
const stripe = new Stripe(process.env.METERFLOW_KEY, {
  host: url.hostname,
  port: Number(url.port),
  protocol: url.protocol.replace(":", ""),
  maxNetworkRetries: 0,
});

const meter = await stripe.billing.meters.create({
  display_name: "Alpaca AI tokens",
  event_name: "alpaca_ai_tokens",
  default_aggregation: { formula: "sum" },
});

async function createAlert(customer, gte) {
  return stripe.billing.alerts.create({
    alert_type: "usage_threshold",
    title: `Over ${gte}`,
    usage_threshold: {
      gte,
      meter: meter.id,
      recurrence: "one_time",
      ...(customer ? { filters: [{ type: "customer", customer }] } : {}),
    },
  });
}

const first = await createAlert("cus_node", 1000);
const second = await createAlert(null, 50);
const expanded = await stripe.billing.alerts.retrieve(first.id, {
  expand: ["usage_threshold.meter"],
});
const listed = await stripe.billing.alerts.list({ meter: meter.id });
let autoPaged = 0;
for await (const _alert of stripe.billing.alerts.list({ limit: 1 })) autoPaged += 1;
const deactivated = await stripe.billing.alerts.deactivate(first.id);
const activated = await stripe.billing.alerts.activate(first.id);
const archived = await stripe.billing.alerts.archive(second.id);
const afterArchive = await stripe.billing.alerts.list();

const report = {
  meterId: meter.id,
  first,
  secondFilters: second.usage_threshold.filters,
  expandedMeter: expanded.usage_threshold.meter.id,
  listedIds: listed.data.map((a) => a.id),
  autoPaged,
  deactivated: deactivated.status,
  activated: activated.status,
  archived: archived.status,
  afterArchiveIds: afterArchive.data.map((a) => a.id),
};
try {
  await stripe.billing.alerts.retrieve(second.id);
} catch (err) {
  report.archivedRetrieve = { type: err.type, status: err.statusCode, code: err.code };
}
try {
  await createAlert("cus_node", -5);
} catch (err) {
  report.badThreshold = { type: err.type, status: err.statusCode, param: err.param };
}
console.log(JSON.stringify(report));
