// Order history, a page at a time, each order's status in words.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { App } from "./app";
import { h, Latest, show } from "./dom";
import { money } from "./money";
import { statusText } from "./order";
import { refunded } from "./refunds";

export async function ordersView(app: App, root: HTMLElement): Promise<void> {
  const tokens = [""];
  const alert = h("p", { role: "alert", class: "problem" });
  const list = h("ul", { class: "orders", "aria-label": "Orders" });
  const pager = h("nav", { "aria-label": "Pages", class: "pager" });
  show(root, h("h1", {}, "Your orders"), alert, list, pager);

  const pages = new Latest();
  async function load(): Promise<void> {
    const signal = pages.next();
    try {
      const page = await app.orders.listOrders({ pageSize: 10, pageToken: tokens[tokens.length - 1] }, { signal });
      if (signal.aborted) return;
      show(
        list,
        ...page.orders.map((order) =>
          h(
            "li",
            {},
            h("a", { href: `#/orders/${order.orderId}` }, order.createdAt ? timestampDate(order.createdAt).toLocaleString("en") : order.orderId),
            ` — ${statusText(order)} — ${money(order.total)}`,
            order.refunds.length > 0 && `, ${money(refunded(order))} refunded`,
          ),
        ),
      );
      if (page.orders.length === 0) show(list, h("li", {}, "No orders yet."));
      show(
        pager,
        tokens.length > 1 && h("button", { type: "button", onclick: () => (tokens.pop(), void load()) }, "Previous page"),
        page.nextPageToken &&
          h("button", { type: "button", onclick: () => (tokens.push(page.nextPageToken), void load()) }, "Next page"),
      );
    } catch (error) {
      if (!signal.aborted) alert.textContent = app.problem(error);
    }
  }
  await load();
}
