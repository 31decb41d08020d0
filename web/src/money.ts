// Amounts travel as integer minor units; shown per their currency.

import type { Money } from "./gen/shop/common/v1/money_pb";

const formats = new Map<string, Intl.NumberFormat>();

function format(currency: string): Intl.NumberFormat {
  let found = formats.get(currency);
  if (!found) {
    found = new Intl.NumberFormat("en", { style: "currency", currency });
    formats.set(currency, found);
  }
  return found;
}

export function money(amount: Money | undefined): string {
  if (!amount) return "";
  const style = format(amount.currencyCode);
  const digits = style.resolvedOptions().maximumFractionDigits ?? 2;
  return style.format(Number(amount.amountMinor) / 10 ** digits);
}
