// An order's refunds after confirmation: each with its amount, where it
// stands and when it was asked for, and what came back in total.

import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { h } from "./dom";
import { type Money, MoneySchema } from "./gen/shop/common/v1/money_pb";
import { type Order, RefundStatus } from "./gen/shop/order/v1/order_pb";
import { money } from "./money";

const REFUND_WORDS: Record<RefundStatus, string> = {
  [RefundStatus.UNSPECIFIED]: "unknown",
  [RefundStatus.PENDING]: "pending",
  [RefundStatus.SUCCEEDED]: "succeeded",
  [RefundStatus.FAILED]: "failed",
};

/** A refund the provider has not settled yet. */
export function refundPending(order: Order): boolean {
  return order.refunds.some((r) => r.status === RefundStatus.PENDING);
}

/** What the succeeded refunds gave back (zero in the order's currency). */
export function refunded(order: Order): Money | undefined {
  return order.refunded ?? (order.total && create(MoneySchema, { currencyCode: order.total.currencyCode }));
}

/** The order's refunds, oldest first; nothing when it has none. */
export function refundsSection(order: Order, names: Map<string, string>): HTMLElement | undefined {
  if (order.refunds.length === 0) return undefined;
  return h(
    "section",
    {},
    h("h2", {}, "Refunds"),
    h("p", { class: "total" }, "Refunded: ", h("strong", {}, money(refunded(order))), ` of ${money(order.total)}`),
    h(
      "ul",
      { "aria-label": "Refunds" },
      ...order.refunds.map((refund) => {
        const what = refund.lines.map((l) => `${l.quantity} × ${names.get(l.sku) ?? l.sku}`).join(", ");
        return h(
          "li",
          {},
          h("strong", {}, money(refund.amount)),
          `: ${REFUND_WORDS[refund.status]}`,
          refund.failureReason && ` (${refund.failureReason})`,
          refund.createdAt && `, asked ${timestampDate(refund.createdAt).toLocaleString("en")}`,
          what && h("span", { class: "meta" }, ` — ${what}${refund.restock ? ", back in stock" : ""}`),
        );
      }),
    ),
  );
}
