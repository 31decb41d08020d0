// What every view shares: the clients, the session, and how a failure or
// a notice is shown.

import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { CartService } from "./gen/shop/cart/v1/cart_pb";
import { CatalogService } from "./gen/shop/catalog/v1/catalog_pb";
import { NotificationService } from "./gen/shop/notify/v1/notify_pb";
import { OrderService } from "./gen/shop/order/v1/order_pb";
import { PaymentService } from "./gen/shop/payment/v1/payment_pb";
import { DevTokens, OidcTokens, saveSession, savedSession, type Session, type TokenSource } from "./auth";
import type { Config } from "./config";
import { describe } from "./errors";
import type { BankAnswer } from "./payment";

export class App {
  readonly catalog: Client<typeof CatalogService>;
  readonly carts: Client<typeof CartService>;
  readonly orders: Client<typeof OrderService>;
  readonly payments: Client<typeof PaymentService>;
  readonly notifications: Client<typeof NotificationService>;
  readonly tokens: TokenSource;
  session: Session | undefined = savedSession();
  /** Shown once on the next page drawn (e.g. why sign-in is asked for). */
  notice = "";
  /** What the bank answered, when the provider's page sent the shopper back. */
  bankAnswer: BankAnswer | undefined;

  constructor(config: Config, readonly onSessionChange: () => void) {
    const bearer: Interceptor = (next) => async (request) => {
      if (this.session) request.header.set("authorization", `Bearer ${this.session.token}`);
      return next(request);
    };
    const transport: Transport = createGrpcWebTransport({ baseUrl: config.gatewayUrl, interceptors: [bearer] });
    this.catalog = createClient(CatalogService, transport);
    this.carts = createClient(CartService, transport);
    this.orders = createClient(OrderService, transport);
    this.payments = createClient(PaymentService, transport);
    this.notifications = createClient(NotificationService, transport);
    this.tokens = config.auth.kind === "oidc" ? new OidcTokens(config.auth) : new DevTokens(transport);
  }

  signedIn(session: Session | undefined): void {
    this.session = session;
    saveSession(session);
    this.onSessionChange();
  }

  /** The failure in words; an ended session sends the user to sign in. */
  problem(error: unknown): string {
    const problem = describe(error);
    if (problem.signIn) {
      this.notice = problem.text;
      this.signedIn(undefined);
      location.hash = "#/sign-in";
    }
    return problem.text;
  }
}
