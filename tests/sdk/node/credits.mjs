// Billing credits through the official Stripe Node SDK against meterflow: create, retrieve,
// update, list, expire and void grants, the balance summary, and balance transactions listed and
// retrieved; print what they show as JSON.
import Stripe from "stripe";

const url = new URL(process.env.METERFLOW_URL);
const stripe = new Stripe(process.env.METERFLOW_KEY, {
  host: url.hostname,
  port: Number(url.port),
  protocol: url.protocol.replace(":", ""),
  maxNetworkRetries: 0,
});

const customer = await stripe.customers.create({ name: "Jenny Rosen" });
const grant = await stripe.billing.creditGrants.create({
  customer: customer.id,
  amount: { type: "monetary", monetary: { currency: "usd", value: 1000 } },
  applicability_config: { scope: { price_type: "metered" } },
  name: "Welcome credits",
  metadata: { campaign: "spring" },
});
const retrieved = await stripe.billing.creditGrants.retrieve(grant.id);
const expiresAt = Math.floor(Date.now() / 1000) + 86_400;
const updated = await stripe.billing.creditGrants.update(grant.id, {
  expires_at: expiresAt,
  metadata: { batch: "7" },
});
const listed = await stripe.billing.creditGrants.list({ customer: customer.id });
const summary = await stripe.billing.creditBalanceSummaries.retrieve({
  customer: customer.id,
  filter: { type: "applicability_scope", applicability_scope: { price_type: "metered" } },
});
const ofGrant = await stripe.billing.creditBalanceSummaries.retrieve({
  customer: customer.id,
  filter: { type: "credit_grant", credit_grant: grant.id },
});
const expired = await stripe.billing.creditGrants.expire(grant.id);
const other = await stripe.billing.creditGrants.create({
  customer: customer.id,
  amount: { type: "monetary", monetary: { currency: "usd", value: 300 } },
  applicability_config: { scope: { price_type: "metered" } },
});
const voided = await stripe.billing.creditGrants.voidGrant(other.id);
const transactions = await stripe.billing.creditBalanceTransactions.list({
  customer: customer.id,
});
const first = transactions.data[transactions.data.length - 1];
const retrievedTransaction = await stripe.billing.creditBalanceTransactions.retrieve(first.id);
const after = await stripe.billing.creditBalanceSummaries.retrieve({
  customer: customer.id,
  filter: { type: "applicability_scope", applicability_scope: { price_type: "metered" } },
});

console.log(
  JSON.stringify({
    grant,
    retrieved,
    expiresAt,
    updated: [updated.expires_at, updated.metadata],
    listed: listed.data.map((g) => g.id),
    summary: summary.balances,
    ofGrant: ofGrant.balances,
    expired: expired.expires_at !== null && expired.expires_at <= Math.floor(Date.now() / 1000),
    voidedGrant: other.id,
    voidedAt: voided.voided_at,
    transactions: transactions.data.map((t) => [
      t.type,
      (t.credit ?? t.debit).type,
      t.credit_grant,
    ]),
    firstTransaction: first,
    retrievedTransaction,
    after: after.balances.filter((b) => b.ledger_balance.monetary.value !== 0),
  }),
);
