// A failed call in words a shopper can act on, from its gRPC status.

import { Code, ConnectError } from "@connectrpc/connect";

export interface Problem {
  text: string;
  /** The session is gone: sign in again. */
  signIn: boolean;
}

export function describe(error: unknown): Problem {
  const failure = ConnectError.from(error);
  switch (failure.code) {
    case Code.InvalidArgument: {
      // Services name the field first: "lines[0].quantity: must be positive".
      const [field, ...reason] = failure.rawMessage.split(": ");
      return {
        text: reason.length ? `Please check ${field}: ${reason.join(": ")}` : failure.rawMessage,
        signIn: false,
      };
    }
    case Code.ResourceExhausted: {
      const millis = Number(failure.metadata.get("retry-after-ms") ?? "1000");
      const seconds = Math.max(1, Math.ceil(millis / 1000));
      return { text: `Too many requests, retry in ${seconds} s.`, signIn: false };
    }
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return { text: "System busy, try later.", signIn: false };
    case Code.Unauthenticated:
      return { text: "Your session has ended; please sign in again.", signIn: true };
    case Code.PermissionDenied:
      return { text: "You may not do that.", signIn: false };
    case Code.Unknown:
    case Code.Internal:
    case Code.Aborted:
      // No status from the shop at all: the connection broke on the way.
      return { text: "The connection to the shop broke; please try again.", signIn: false };
    default:
      return { text: failure.rawMessage || "Something went wrong; please try again.", signIn: false };
  }
}
