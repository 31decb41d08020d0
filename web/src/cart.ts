// The cart: change quantities, remove, clear, and check out with one
// idempotency key per attempt, so a retry or a double click makes one order.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { App } from "./app";
import { h, show } from "./dom";
import type { Cart } from "./gen/shop/cart/v1/cart_pb";
import { money } from "./money";
import { PAYMENT_METHODS } from "./payment";


const ATTEMPT_KEY = "shop.checkout-attempt";

/**
 * The key of this checkout attempt: the same while the cart and the method
 * stay the same (a retry, a second click), a new one when they change.
 */
function attemptKey(cart: Cart, method: string): string {
  const fingerprint = [method, ...cart.lines.map((l) => `${l.sku}x${l.quantity}`).sort()].join(",");
  const saved = JSON.parse(sessionStorage.getItem(ATTEMPT_KEY) ?? "null") as { key: string; fingerprint: string } | null;
  if (saved?.fingerprint === fingerprint) return saved.key;
  const key = `web-${crypto.randomUUID()}`;
  sessionStorage.setItem(ATTEMPT_KEY, JSON.stringify({ key, fingerprint }));
  return key;
}

export async function cartView(app: App, root: HTMLElement): Promise<void> {
  const alert = h("p", { role: "alert", class: "problem" });
  const body = h("div");
  show(root, h("h1", {}, "Your cart"), alert, body);

  const run = async (call: () => Promise<Cart>): Promise<void> => {
    alert.textContent = "";
    try {
      draw(await call());
    } catch (error) {
      alert.textContent = app.problem(error);
    }
  };

  function draw(cart: Cart): void {
    if (cart.lines.length === 0) {
      show(body, h("p", {}, "Your cart is empty."), h("a", { href: "#/" }, "Browse the catalog"));
      return;
    }
    const rows = cart.lines.map((line) => {
      const id = `quantity-${line.sku}`;
      const quantity = h("input", {
        id,
        type: "number",
        min: 1,
        max: 99,
        value: line.quantity,
        inputmode: "numeric",
      }) as HTMLInputElement;
      quantity.addEventListener("change", () =>
        run(() => app.carts.updateItem({ sku: line.sku, quantity: Number(quantity.value) })),
      );
      return h(
        "tr",
        {},
        h("th", { scope: "row" }, line.name),
        h("td", {}, h("label", { for: id, class: "visually-hidden" }, `Quantity of ${line.name}`), quantity),
        h("td", {}, money(line.unitPrice)),
        h(
          "td",
          {},
          h(
            "button",
            { type: "button", "aria-label": `Remove ${line.name}`, onclick: () => run(() => app.carts.removeItem({ sku: line.sku })) },
            "Remove",
          ),
        ),
      );
    });
    const method = h(
      "select",
      { id: "payment-method" },
      ...PAYMENT_METHODS.map(([value, label]) => h("option", { value }, label)),
    ) as HTMLSelectElement;
    const checkout = h("button", { type: "button", class: "primary" }, "Check out");
    checkout.addEventListener("click", async () => {
      if (checkout.hasAttribute("disabled")) return;
      checkout.setAttribute("disabled", "");
      alert.textContent = "";
      try {
        const order = await app.carts.checkout({
          idempotencyKey: attemptKey(cart, method.value),
          paymentMethod: method.value,
        });
        sessionStorage.removeItem(ATTEMPT_KEY);
        location.hash = `#/orders/${order.orderId}`;
      } catch (error) {
        // The same key on the next click: a retry, not a second order.
        alert.textContent = app.problem(error);
        checkout.removeAttribute("disabled");
      }
    });
    const expires = cart.expiresAt ? timestampDate(cart.expiresAt).toLocaleString("en") : "";
    show(
      body,
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, "Cart lines"),
        h(
          "thead",
          {},
          h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col" }, "Quantity"), h("th", { scope: "col" }, "Unit price"), h("td")),
        ),
        h("tbody", {}, ...rows),
      ),
      h("p", { class: "total" }, "Total: ", h("strong", {}, money(cart.total))),
      expires && h("p", { class: "meta" }, `Your cart is kept until ${expires}.`),
      h(
        "button",
        { type: "button", onclick: () => run(() => app.carts.clearCart({})) },
        "Clear cart",
      ),
      h("h2", {}, "Check out"),
      h("label", { for: "payment-method" }, "Payment method"),
      method,
      checkout,
    );
  }

  await run(() => app.carts.getCart({}));
}
