// A few lines instead of a UI library: elements from tag, attributes and
// children, with text always set as text (never parsed as HTML).

type Child = Node | string | null | undefined | false;
type Attributes = Record<string, string | number | boolean | ((event: Event) => void) | undefined>;

export function h(tag: string, attributes: Attributes = {}, ...children: Child[]): HTMLElement {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") {
      element.addEventListener(name.replace(/^on/, ""), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child);
  }
  return element;
}

/** Replaces what `parent` shows. */
export function show(parent: HTMLElement, ...children: Child[]): void {
  parent.replaceChildren(...children.filter((c): c is Node | string => Boolean(c)));
}

/**
 * Requests of which only the latest counts: each `next()` aborts the one
 * before, so a slow answer to an older request never replaces what the
 * shopper asked for since.
 */
export class Latest {
  private current = new AbortController();

  next(): AbortSignal {
    this.current.abort();
    this.current = new AbortController();
    return this.current.signal;
  }
}
