// One order, live: WatchOrder over gRPC-web shows Pending → Reserved →
// Confirmed (or Cancelled, with the reason in words) as they happen, and
// what a reserved order's payment waits for (the customer's bank, or a
// payment that settles later); a dropped stream reconnects and resumes
// from the order's current state. A confirmed order shows its refunds.

import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { App } from "./app";
import { h, show } from "./dom";
import { CancelReason, type Order, OrderStatus, PaymentWait } from "./gen/shop/order/v1/order_pb";
import { PaymentStatus } from "./gen/shop/payment/v1/payment_pb";
import { money } from "./money";
import { paymentStep, WAIT_WORDS } from "./payment";
import { refundPending, refundsSection } from "./refunds";

export const STATUS_WORDS: Record<OrderStatus, string> = {
  [OrderStatus.UNSPECIFIED]: "Unknown",
  [OrderStatus.PENDING]: "Pending",
  [OrderStatus.RESERVED]: "Reserved",
  [OrderStatus.CONFIRMED]: "Confirmed",
  [OrderStatus.CANCELLED]: "Cancelled",
  [OrderStatus.PARTIALLY_REFUNDED]: "Partially refunded",
  [OrderStatus.REFUNDED]: "Refunded",
};

const REASON_WORDS: Record<CancelReason, string> = {
  [CancelReason.UNSPECIFIED]: "",
  [CancelReason.OUT_OF_STOCK]: "some items were out of stock",
  [CancelReason.PAYMENT_DECLINED]: "the payment was declined",
  [CancelReason.RESERVATION_EXPIRED]: "the reservation expired before payment",
  [CancelReason.CUSTOMER_CANCELLED]: "you cancelled it",
  [CancelReason.TIMED_OUT]: "it could not be completed in time; nothing was charged or kept",
  [CancelReason.PAYMENT_NOT_AUTHENTICATED]: "the payment was not confirmed with your bank in time; nothing was charged",
};

const PAYMENT_WORDS: Record<PaymentStatus, string> = {
  [PaymentStatus.UNSPECIFIED]: "unknown",
  [PaymentStatus.PENDING]: "pending",
  [PaymentStatus.SUCCEEDED]: "paid",
  [PaymentStatus.FAILED]: "failed",
  [PaymentStatus.REFUNDED]: "refunded",
  [PaymentStatus.CANCELLED]: "cancelled",
  [PaymentStatus.PROCESSING]: "processing",
  [PaymentStatus.REQUIRES_ACTION]: "waiting for your bank's confirmation",
};

/** The step of the progress timeline: what a reserved order waits for. */
const WAIT_STEPS: Record<PaymentWait, string> = {
  [PaymentWait.UNSPECIFIED]: "",
  [PaymentWait.PROCESSING]: "Processing",
  [PaymentWait.CUSTOMER_ACTION]: "Waiting for your bank",
};

export function statusText(order: Order): string {
  const words = STATUS_WORDS[order.status];
  const reason = REASON_WORDS[order.cancelReason];
  if (order.status === OrderStatus.CANCELLED && reason) return `${words}: ${reason}`;
  const wait = WAIT_WORDS[order.paymentWait];
  if (order.status === OrderStatus.RESERVED && wait) return `${words}: ${wait}`;
  return words;
}

function step(order: Order): string {
  return (order.status === OrderStatus.RESERVED && WAIT_STEPS[order.paymentWait]) || STATUS_WORDS[order.status];
}

/** Past the checkout: confirmed (refunded since, perhaps) or cancelled. */
function settled(order: Order): boolean {
  return [OrderStatus.CONFIRMED, OrderStatus.CANCELLED, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED].includes(
    order.status,
  );
}

export async function orderView(app: App, root: HTMLElement, orderId: string, signal: AbortSignal): Promise<void> {
  const status = h("p", { role: "status", class: "status" }, "Loading…");
  const seen = h("ol", { class: "timeline", "aria-label": "Progress" });
  const alert = h("p", { role: "alert", class: "problem" });
  const next = h("div");
  const details = h("div");
  const actions = h("div");
  const refunds = h("div");
  const after = h("div");
  show(
    root,
    h("h1", {}, "Order"),
    h("p", { class: "meta" }, orderId),
    status,
    seen,
    alert,
    next,
    actions,
    details,
    refunds,
    after,
  );
  // Back from the bank's page: what it answered, for this order.
  const answer = app.bankAnswer?.orderId === orderId ? app.bankAnswer : undefined;

  // Orders carry SKUs; the catalog has their names (looked up once).
  const names = new Map<string, string>();
  let named = false;
  let latest: Order | undefined;
  async function lookUpNames(order: Order): Promise<void> {
    named = true;
    try {
      const { products } = await app.catalog.listProducts({ skus: order.lines.map((l) => l.sku) });
      for (const p of products) names.set(p.sku, p.name);
      if (latest) draw(latest);
    } catch {
      // The SKUs stay: a name is a nicety, not worth an error on the page.
    }
  }

  const steps: string[] = [];
  let afterwards = false;
  function draw(order: Order): void {
    latest = order;
    if (!named) void lookUpNames(order);
    status.textContent = statusText(order);
    if (steps[steps.length - 1] !== step(order)) {
      steps.push(step(order));
      seen.append(h("li", {}, step(order)));
    }
    show(next, paymentStep(order, answer));
    show(refunds, refundsSection(order, names));
    if (settled(order) && !afterwards) {
      afterwards = true;
      void drawAfterwards(app, orderId, after);
    }
    show(
      details,
      h(
        "ul",
        { "aria-label": "Lines" },
        ...order.lines.map((l) => h("li", {}, `${l.quantity} × ${names.get(l.sku) ?? l.sku} at ${money(l.unitPrice)}`)),
      ),
      h("p", { class: "total" }, "Total: ", h("strong", {}, money(order.total))),
      order.createdAt && h("p", { class: "meta" }, `Placed ${timestampDate(order.createdAt).toLocaleString("en")}`),
    );
    const cancellable = order.status === OrderStatus.PENDING || order.status === OrderStatus.RESERVED;
    show(
      actions,
      cancellable &&
        h(
          "button",
          {
            type: "button",
            onclick: async (event: Event) => {
              const button = event.currentTarget as HTMLButtonElement;
              button.disabled = true;
              try {
                draw(await app.orders.cancelOrder({ orderId }));
              } catch (error) {
                alert.textContent = app.problem(error);
                button.disabled = false;
              }
            },
          },
          "Cancel order",
        ),
    );
  }

  const last = await watch(app, orderId, signal, draw, (text) => (alert.textContent = text));
  if (last && settled(last)) await followRefunds(app, orderId, signal, draw, last);
}

/**
 * A settled order's watch has ended; a refund still pending settles later:
 * look again every few seconds until none is.
 */
async function followRefunds(
  app: App,
  orderId: string,
  signal: AbortSignal,
  draw: (order: Order) => void,
  order: Order,
): Promise<void> {
  while (refundPending(order) && !signal.aborted) {
    await new Promise((resume) => setTimeout(resume, 2000));
    if (signal.aborted) return;
    try {
      order = await app.orders.getOrder({ orderId }, { signal });
      draw(order);
    } catch (error) {
      // The page still shows the last look; the next may fare better.
      if (FINAL.includes(ConnectError.from(error).code)) return;
    }
  }
}

/** Failures that looking again does not mend. */
const FINAL = [Code.NotFound, Code.Unauthenticated, Code.PermissionDenied, Code.InvalidArgument];

/**
 * Follows the order until it settles, reconnecting when the stream drops;
 * every (re)connection starts with the current state.
 */
async function watch(
  app: App,
  orderId: string,
  signal: AbortSignal,
  draw: (order: Order) => void,
  problem: (text: string) => void,
): Promise<Order | undefined> {
  let last: Order | undefined;
  let pause = 500;
  while (!signal.aborted) {
    try {
      for await (const order of app.orders.watchOrder({ orderId }, { signal })) {
        last = order;
        problem("");
        pause = 500;
        draw(order);
      }
      if (last && settled(last)) return last;
    } catch (error) {
      if (signal.aborted) return last;
      const failure = ConnectError.from(error);
      if (FINAL.includes(failure.code)) {
        problem(app.problem(error));
        return last;
      }
      problem(`${app.problem(error)} Reconnecting…`);
    }
    await new Promise((resume) => setTimeout(resume, pause));
    pause = Math.min(pause * 2, 5000);
  }
  return last;
}

/** The payment and the emails of a settled order. */
async function drawAfterwards(app: App, orderId: string, into: HTMLElement): Promise<void> {
  const payment = h("p", {}, "Payment: …");
  const emails = h("ul", { "aria-label": "Emails" });
  show(into, h("h2", {}, "Payment"), payment, h("h2", {}, "Emails"), emails);
  try {
    const found = await app.payments.getPayment({ orderId });
    payment.textContent = `Payment: ${PAYMENT_WORDS[found.status]}, ${money(found.amount)}${
      found.failureReason ? ` (${found.failureReason})` : ""
    }`;
  } catch (error) {
    payment.textContent = ConnectError.from(error).code === Code.NotFound ? "Payment: none was taken." : app.problem(error);
  }
  try {
    // An email is sent just after the order settles: look again briefly.
    for (let attempt = 0; attempt < 10; attempt++) {
      const { notifications } = await app.notifications.listNotifications({ orderId });
      if (notifications.length > 0) {
        show(emails, ...notifications.map((n) => h("li", {}, h("strong", {}, n.subject), ` to ${n.recipient}`)));
        return;
      }
      await new Promise((resume) => setTimeout(resume, 500));
    }
    show(emails, h("li", {}, "No email yet."));
  } catch (error) {
    show(emails, h("li", {}, app.problem(error)));
  }
}
