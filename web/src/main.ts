// The storefront: routes (`#/`, `#/cart`, `#/orders`, `#/orders/<id>`,
// `#/sign-in`) to views, with the signed-in user in the header.

import { App } from "./app";
import { cartView } from "./cart";
import { catalogView } from "./catalog";
import { loadConfig } from "./config";
import { h, show } from "./dom";
import { orderView } from "./order";
import { ordersView } from "./orders";
import { takeBankAnswer } from "./payment";
import { signInView } from "./signin";

const SIGNED_IN_ONLY = /^#\/(cart|orders)/;

async function start(): Promise<void> {
  const main = document.querySelector("main") as HTMLElement;
  const account = document.querySelector("#account") as HTMLElement;
  let app: App;
  try {
    app = new App(await loadConfig(), () => drawAccount());
  } catch (error) {
    show(main, h("p", { role: "alert" }, `The shop cannot start: ${String(error)}`));
    return;
  }
  try {
    const returned = await app.tokens.completeRedirect();
    if (returned) app.signedIn(returned);
  } catch (error) {
    app.notice = String(error);
  }
  app.bankAnswer = takeBankAnswer();

  function drawAccount(): void {
    show(
      account,
      app.session
        ? h(
            "span",
            {},
            `Signed in as ${app.session.user} `,
            h("button", { type: "button", onclick: () => (app.signedIn(undefined), (location.hash = "#/")) }, "Sign out"),
          )
        : h("a", { href: "#/sign-in" }, "Sign in"),
    );
  }

  let leaving = new AbortController();
  async function route(): Promise<void> {
    leaving.abort();
    leaving = new AbortController();
    const hash = location.hash || "#/";
    if (SIGNED_IN_ONLY.test(hash) && !app.session) {
      app.notice = "Sign in to see your cart and orders.";
      location.hash = "#/sign-in";
      return;
    }
    for (const link of document.querySelectorAll("header nav a")) {
      link.toggleAttribute("aria-current", link.getAttribute("href") === hash);
    }
    const order = hash.match(/^#\/orders\/([0-9a-fA-F-]+)$/);
    if (order) await orderView(app, main, order[1], leaving.signal);
    else if (hash === "#/cart") await cartView(app, main);
    else if (hash === "#/orders") await ordersView(app, main);
    else if (hash === "#/sign-in") signInView(app, main);
    else await catalogView(app, main);
  }

  drawAccount();
  window.addEventListener("hashchange", () => void route());
  await route();
}

void start();
