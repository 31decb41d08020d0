// Paying: the methods the shop takes, and what a reserved order's payment
// waits for. A card that asks the customer's bank to confirm (3-D Secure)
// links to the payment provider's page, which sends the customer back to
// the order's page; a payment that settles later says so until it has.

import { h } from "./dom";
import { type Order, OrderStatus, PaymentWait } from "./gen/shop/order/v1/order_pb";

/** The payment methods the shop takes (test cards, for now), for humans. */
export const PAYMENT_METHODS: [string, string][] = [
  ["pm_card_ok", "Card (test: approved)"],
  ["pm_card_declined", "Card (test: declined)"],
  ["pm_card_timeout", "Card (test: provider times out)"],
  ["pm_card_3ds", "Card that asks your bank to confirm (test: 3-D Secure)"],
  ["pm_card_async", "Bank transfer that settles later (test: approved)"],
  ["pm_card_async_declined", "Bank transfer that settles later (test: declined)"],
];

/** What a reserved order's payment waits for, in words. */
export const WAIT_WORDS: Record<PaymentWait, string> = {
  [PaymentWait.UNSPECIFIED]: "",
  [PaymentWait.PROCESSING]: "payment processing",
  [PaymentWait.CUSTOMER_ACTION]: "waiting for your bank's confirmation",
};

/** The bank's answer, as the provider's page sent the customer back. */
export interface BankAnswer {
  orderId: string;
  confirmed: boolean;
}

/**
 * Reads the answer of a return from the provider's page
 * (`/?payment_intent=…&redirect_status=…#/orders/<id>`) and drops it from
 * the address, so that it counts once and for that order only.
 */
export function takeBankAnswer(): BankAnswer | undefined {
  const params = new URLSearchParams(location.search);
  const outcome = params.get("redirect_status");
  if (!params.has("payment_intent") || !outcome) return undefined;
  params.delete("payment_intent");
  params.delete("redirect_status");
  const rest = params.toString();
  history.replaceState(history.state, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  const order = location.hash.match(/^#\/orders\/([0-9a-fA-F-]+)$/);
  return order ? { orderId: order[1], confirmed: outcome === "succeeded" } : undefined;
}

/** Only a web address is followed: never `javascript:` or the like. */
function webAddress(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What the customer should know, or do, while the order's payment waits:
 * nothing once it no longer does.
 */
export function paymentStep(order: Order, answer: BankAnswer | undefined): HTMLElement | undefined {
  if (order.status !== OrderStatus.RESERVED) return undefined;
  switch (order.paymentWait) {
    case PaymentWait.PROCESSING:
      return h(
        "p",
        { class: "notice" },
        h("strong", {}, "Payment processing"),
        ": it settles in a moment; this page updates by itself.",
      );
    case PaymentWait.CUSTOMER_ACTION: {
      // Back from the bank: its answer is on the way here, no second visit.
      if (answer) {
        return h(
          "p",
          { class: "notice" },
          answer.confirmed
            ? "Your bank confirmed the payment; completing it…"
            : "Your bank did not confirm the payment.",
        );
      }
      const url = webAddress(order.nextActionUrl);
      return h(
        "div",
        { class: "next-step" },
        h("p", {}, "Your bank asks you to confirm this payment. You come back to this page afterwards."),
        url
          ? h("a", { href: url, class: "button primary" }, "Confirm with your bank")
          : h("p", { class: "meta" }, "The way to your bank is not known yet; this page shows it when it is."),
      );
    }
    default:
      return undefined;
  }
}
